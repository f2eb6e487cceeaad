def hello(name="world"):
    return "hello " + name
