"""Calls dynupdate_agent.start() and reports the outcome (for unsafe socket folders)."""
import dynupdate_agent

try:
    path = dynupdate_agent.start()
except dynupdate_agent.AgentStartError as exc:
    print(f"REFUSED {exc}", flush=True)
else:
    print(f"STARTED {path}", flush=True)
