import os

# A failing task retries twice (the DAGs' contract); in tests the wait between tries is short.
os.environ.setdefault("DAILYMIX_RETRY_DELAY_SECONDS", "1")
