"""pf_app.late v2: the counter's state moves to another attribute (and back on rollback)."""


class Counter:
    def __init__(self):
        self.count = 0

    def __dynupdate_transfer__(self, old):
        self.count = old["hits"]
        del self.hits

    def __dynupdate_revert__(self, new):
        self.hits = new["count"]
        del self.count


COUNTER = Counter()


def answer():
    COUNTER.count += 1
    return "late-v2"
