"""Prefect Secret blocks: the one way the flows read a credential (a token, a webhook URL)."""

from __future__ import annotations

from typing import cast

from playbook.errors import AccessDeniedError


def load_secret(block_name: str, what: str, hint: str = "") -> str:
    """The value stored in the Prefect Secret block `block_name`, stripped.

    `what` names the credential in the error ("no registry token"); `hint` says how to make
    the block (it follows the "does not exist" message).

    Raises:
        AccessDeniedError: the block does not exist, cannot be read, or is empty.
    """
    from prefect.blocks.system import Secret  # here: the blocks' import is slow, few runs need it

    try:
        secret = cast("Secret[str]", Secret.load(block_name))
    except ValueError as exc:
        raise AccessDeniedError(
            f"{what}: the Prefect Secret block {block_name!r} does not exist{hint}"
        ) from exc
    value = secret.get()
    if not isinstance(value, str) or not value.strip():
        raise AccessDeniedError(f"{what}: the Secret block {block_name!r} is empty")
    return value.strip()
