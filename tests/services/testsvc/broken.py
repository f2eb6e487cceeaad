raise RuntimeError("this endpoint cannot load")


def never():
    """Defined, so that the service passes `apinode run`'s checks: it fails only when loaded."""
