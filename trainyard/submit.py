"""`trainyard submit`: placeholder wiring until the submission code moves out of jobs/ (helper D replaces this)."""


def register(subparsers, kit) -> None:
    from jobs.submit import register as register_submit
    register_submit(subparsers)
