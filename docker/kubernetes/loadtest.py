"""The load test the Kubernetes manifests run: kustomization.yaml puts this file in the
goose-loadtest ConfigMap, which the Manager and every Worker mount at /loadtest.

Replace it with your own (and set --host in manager.yaml to your service). This one browses
the demo site of target.yaml: the front page, articles and user profiles, with a short
pause between pages as a reader would.
"""

from __future__ import annotations

import random

from goose_redis import Scenario, Transaction, User


async def front_page(user: User) -> None:
    resp = await user.get("/", name="front page")
    if resp.ok and "Welcome" not in resp.text:
        resp.fail("no welcome text on the front page")


async def article(user: User) -> None:
    await user.get(f"/node/{random.randint(1, 10_000)}", name="article")


async def profile(user: User) -> None:
    await user.get(f"/user/{random.randint(1, 5_000)}", name="profile")


reader = Scenario("Reader", wait=(0.5, 2.0)).register(
    Transaction(front_page, name="front page", weight=2),
    Transaction(article, name="article", weight=5),
    Transaction(profile, name="profile", weight=1),
)
