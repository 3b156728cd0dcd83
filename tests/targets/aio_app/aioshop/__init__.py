"""The asyncio test service's code: `logic` is what the bundles replace; `gates` is not."""
