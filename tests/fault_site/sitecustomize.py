"""With this folder on PYTHONPATH, the fault ``$JAXRES_TEST_FAULT`` (``tests/fault_run.py``'s names) is installed in
the child that does a distributed run's work (``jaxres.distributed.supervise``), where ``fault_run.py`` cannot
reach: Python imports ``sitecustomize`` at the start of every process."""
import os
import sys

if os.environ.get("JAXRES_TEST_FAULT") and os.environ.get("JAXRES_SUPERVISED"):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tests/
    import fault_run

    fault_run.install(os.environ["JAXRES_TEST_FAULT"])
