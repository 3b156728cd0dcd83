"""Live state for the veto and rehearsal tests: plain (not @updatable) accounts and a queue."""
import os

QUEUE = []


class Account:
    def __init__(self, n):
        self.n = n
        self.balance = n

    def describe(self):
        return f"account {self.n}: {self.balance}"


ACCOUNTS = [Account(i) for i in range(int(os.environ.get("LEDGER_ACCOUNTS", "1500")))]


def total():
    return sum(a.balance for a in ACCOUNTS)
