"""The one error hierarchy of rollback-flows.

Every failure a flow can meet is one of these, so a caller (a flow, a retry policy, a person
reading the run) knows what to do next without knowing which library raised it::

    RollbackError                 base of everything raised on purpose
    ├── TransientError            retry: the same call can succeed later
    │   ├── ServerError           5xx from an API
    │   ├── RateLimitedError      429
    │   ├── NetworkError          connection refused/reset, DNS, broken stream
    │   ├── RequestTimeoutError   connect or read timeout
    │   └── ConflictError         409 or a failed JSON-patch `test`: re-read, then retry
    └── PermanentError            stop: retrying cannot help, a person must act
        ├── InvalidInputError     bad parameters: unknown service, malformed version, ...
        │   └── RevisionNotFoundError
        ├── NotFoundError         404: the object does not exist
        ├── AccessDeniedError     401/403, or credentials missing
        ├── ApiRequestError       any other 4xx: the request itself is wrong
        ├── RolloutFailedError    the rollout stopped progressing or missed its deadline
        ├── VerificationFailedError  the change was made but the result is not as expected
        ├── UnsafePatchError      the planned change would break traffic; nothing was sent
        └── RollbackRefusedError  a guard refused the rollback (lock, cap, approval, owner)

Library exceptions (`kubernetes.client.ApiException`, urllib3's, httpx's, Prometheus') are
translated at the boundary, `tasks/boundary.py`, so they never leak past `tasks/`; its
`retry_condition_fn` lets a Prefect task retry only the transient ones.
"""

from __future__ import annotations


class RollbackError(Exception):
    """Base of every error this project raises on purpose."""


class TransientError(RollbackError):
    """The same call can succeed if retried after a delay."""


class ServerError(TransientError):
    """The API answered 5xx."""


class RateLimitedError(TransientError):
    """The API answered 429 Too Many Requests."""


class NetworkError(TransientError):
    """The API could not be reached or the connection broke (refused, reset, DNS)."""


class RequestTimeoutError(TransientError):
    """Connecting to or reading from the API took longer than the timeout."""


class ConflictError(TransientError):
    """The object changed under us (409, or a failed JSON-patch `test`): re-read and retry."""


class PermanentError(RollbackError):
    """Retrying cannot help; the message says what a person must change."""


class InvalidInputError(PermanentError):
    """A parameter or configuration value is invalid; nothing was changed."""


class RevisionNotFoundError(InvalidInputError):
    """The requested rollout revision does not exist in the Deployment's history."""


class NotFoundError(PermanentError):
    """The object does not exist (404)."""


class AccessDeniedError(PermanentError):
    """Credentials are missing, invalid (401) or not allowed to do this (403)."""


class ApiRequestError(PermanentError):
    """The API rejected the request (a 4xx other than 401, 403, 404, 409, 429)."""


class RolloutFailedError(PermanentError):
    """The rollout exceeded its progress deadline or did not finish in time."""


class VerificationFailedError(PermanentError):
    """The change was applied but a check of the result failed (pods, routes, version)."""


class UnsafePatchError(PermanentError):
    """The planned change would leave traffic unsafe, so it was not applied."""


class RollbackRefusedError(PermanentError):
    """A guard refused the rollback before it changed anything: another rollback of the service
    holds its lock, the hourly cap, a person's answer, a GitOps owner, ..."""
