"""The demo kitchen, version 1: one recipe per dish."""
import asyncio


def recipe(dish):
    return f"{dish} (v1 recipe)"


async def cook(dish, seconds):
    """Looks the recipe up, simmers (the request's task is suspended here), serves."""
    started = recipe(dish)
    await asyncio.sleep(seconds)
    return {"dish": dish, "started": started, "served": recipe(dish)}
