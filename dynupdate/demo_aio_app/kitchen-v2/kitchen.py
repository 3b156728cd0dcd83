"""The demo kitchen, version 2: recipes take a spice (a new signature)."""
import asyncio


def recipe(dish, spice):
    return f"{dish} (v2 recipe, {spice})"


async def cook(dish, seconds):
    """Looks the recipe up, simmers (the request's task is suspended here), serves."""
    started = recipe(dish, "pepper")
    await asyncio.sleep(seconds)
    return {"dish": dish, "started": started, "served": recipe(dish, "pepper")}
