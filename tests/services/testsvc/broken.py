raise RuntimeError("this endpoint cannot load")
