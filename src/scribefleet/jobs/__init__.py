"""Jobs: where work is created and run. Inputs and options become batches and tasks in a store.

    inputs.py   files, folders and globs -> InputFile (checked before anything starts)
    create.py   hashing and header lengths, work dirs, the transcribe spec; a transcribe batch, a submitted file
    plans.py    a loaded Plan -> store tasks and its batch
    run.py      the LocalEngine + Dispatcher of a state dir; a whole run; queued jobs; the submit runner
    lookup.py   ids, task keys and names -> a batch or task of a store; cancel; log lines of a task
    views.py    TaskView: the one public view of a task (CLI JSON, API JSON, UI)
    eta.py      elapsed time and ETA of a file and of a batch, from audio seconds done
    remote.py   a folder through a controller, resumably (BatchState, BatchRunner)

The CLI, the service and plans create work only through this package.
"""
