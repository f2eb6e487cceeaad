import os

WORDS = [open(os.path.join(folder, "word.txt")).read().strip() for folder in folders]


def words():
    return {"folders": folders, "words": WORDS}
