"""The flows of Goose's Drupal example: anonymous browsing, and logged-in users who comment.

Run it against the embedded demo site (``goose-redis demo-site``) or a Drupal 7 site with
accounts ``user1`` .. ``user5000`` sharing one password:

    python examples/drupal_loadtest.py --host http://127.0.0.1:8080 --users 10 --run-time 30s

Anonymous users are four times as common as logged-in ones. Every page fetches the static
assets it links, as a browser with an empty cache would.
"""

from __future__ import annotations

import random
import re
import secrets

from goose_redis import Response, Scenario, Transaction, User, main

MAX_NID = 10_000
MAX_UID = 5_000
# The demo site's accounts; edit for a real site.
PASSWORD = "goose"

# Same-host assets only (a leading single slash), with or without a cache-busting query.
ASSET_RE = re.compile(r'(?:src|href)="(/(?!/)[^"?#]+\.(?:css|js|png|jpe?g|gif|ico|svg|woff2?)(?:\?[^"]*)?)"')
HIDDEN_INPUT_RE = re.compile(r'<input type="hidden" name="([^"]+)" value="([^"]*)"')


async def load_static_assets(user: User, page: Response, prefix: str) -> None:
    """Fetch every asset the page links, once each, as one aggregated row."""
    for asset in dict.fromkeys(ASSET_RE.findall(page.text)):
        await user.get(asset, name=f"{prefix} static asset")


def hidden_fields(page: Response) -> dict[str, str]:
    return dict(HIDDEN_INPUT_RE.findall(page.text))


def front_page(prefix: str) -> Transaction:
    async def run(user: User) -> None:
        resp = await user.get("/", name=f"{prefix} front page")
        await load_static_assets(user, resp, prefix)

    return Transaction(run, name=f"{prefix} front page", weight=15)


def node_page(prefix: str) -> Transaction:
    async def run(user: User) -> None:
        nid = random.randint(1, MAX_NID)
        # One name for all nodes, so they aggregate into one row.
        resp = await user.get(f"/node/{nid}", name=f"{prefix} node page")
        await load_static_assets(user, resp, prefix)

    return Transaction(run, name=f"{prefix} node page", weight=10)


def user_page(prefix: str) -> Transaction:
    async def run(user: User) -> None:
        uid = random.randint(1, MAX_UID)
        resp = await user.get(f"/user/{uid}", name=f"{prefix} user page")
        await load_static_assets(user, resp, prefix)

    return Transaction(run, name=f"{prefix} user page", weight=3)


async def log_in(user: User) -> None:
    form = await user.get("/user", name="(Auth) login form")
    if not form.ok:
        return  # already counted as failed, with its own error
    fields = hidden_fields(form)
    if "form_build_id" not in fields:
        form.fail("login form has no form_build_id")
        return
    username = f"user{user.index % MAX_UID + 1}"
    resp = await user.post_form(
        "/user",
        {
            "name": username,
            "pass": PASSWORD,
            "form_build_id": fields["form_build_id"],
            "form_id": fields.get("form_id", "user_login"),
            "op": "Log in",
        },
        name="(Auth) login",
    )
    if not resp.ok:
        return
    # A failed login is a 200 with the form again: only the page tells.
    if "Log out" not in resp.text:
        resp.fail(f"login as {username} failed: no 'Log out' link")
        return
    user.session_data["username"] = username


async def post_comment(user: User) -> None:
    nid = random.randint(1, MAX_NID)
    form = await user.get(f"/comment/reply/{nid}", name="(Auth) comment form")
    if not form.ok:
        return
    fields = hidden_fields(form)
    missing = [f for f in ("form_build_id", "form_token", "form_id") if f not in fields]
    if missing:
        form.fail(f"comment form without {', '.join(missing)}")
        return
    text = f"Honk from user {user.index}, comment {secrets.token_hex(4)}"
    resp = await user.post_form(
        f"/comment/reply/{nid}",
        {**fields, "subject": f"Goose {user.index}", "comment_body[und][0][value]": text, "op": "Save"},
        name="(Auth) post comment",
    )
    if resp.ok and text not in resp.text:
        resp.fail("the posted comment is not on the node page")


anon = Scenario("AnonBrowsingUser", weight=4, wait=(0.0, 3.0)).register(
    front_page("(Anon)"),
    node_page("(Anon)"),
    user_page("(Anon)"),
)

auth = Scenario("AuthBrowsingUser", weight=1, wait=(0.0, 3.0)).register(
    Transaction(log_in, name="(Auth) login", on_start=True),
    front_page("(Auth)"),
    node_page("(Auth)"),
    user_page("(Auth)"),
    Transaction(post_comment, name="(Auth) comment", weight=3),
)


if __name__ == "__main__":
    main()
