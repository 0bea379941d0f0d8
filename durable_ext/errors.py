"""The one exception hierarchy of durable_ext.

Every error the package raises on purpose derives from :class:`DurableExtError`, so callers can catch
the family with one ``except`` and still tell the cases apart by class.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from durable_ext.history import OrchestrationStatus


class DurableExtError(Exception):
    """Base class of every error raised by durable_ext.

    :attr:`http_status` is the status the management API answers an error of that class with; the
    API maps no class by hand. :attr:`caller_mistake` says whether the error answers what the caller
    asked for (logged at INFO) rather than being a failure of durable_ext (logged as an error).
    """

    http_status: ClassVar[int] = 500
    caller_mistake: ClassVar[bool] = False


class ConfigError(DurableExtError):
    """host.json, local.settings.json or an environment override is invalid.

    The message names the file (or variable) and the key.
    """


class ValidationError(DurableExtError):
    """An argument from a caller (hub name, instance ID, payload) is not acceptable; nothing was written."""

    http_status = 400
    caller_mistake = True


class NotJsonError(ValidationError):
    """A text that must be JSON does not parse as JSON at all (as opposed to JSON that breaks a rule)."""


class InvalidHubNameError(ValidationError, ConfigError):
    """A task hub name breaks the naming rules (3-45 letters and digits, starting with a letter)."""


class InvalidInstanceIdError(ValidationError):
    """An instance ID is empty, too long, or contains a forbidden character."""


class PayloadTooLargeError(ValidationError):
    """A payload exceeds the size durable_ext accepts."""

    http_status = 413


class StorageError(DurableExtError):
    """Azure Storage failed in a way the caller should hear about."""


class StorageUnreachableError(StorageError):
    """Azure Storage (or Azurite) does not answer at the configured endpoint."""


class TaskHubNotFoundError(StorageError):
    """The task hub's resources do not exist in the storage account."""


class OwnershipLostError(StorageError):
    """A conditional write on the history sentinel failed (409/412): another worker owns the instance.

    This is the "split brain" case; the episode must be abandoned, not failed.
    """


class MessageFormatError(DurableExtError):
    """A queue message or table row cannot be decoded into a durable_ext type."""


class AzuriteError(DurableExtError):
    """Azurite could not be found, installed, started or stopped."""


class AppLoadError(DurableExtError):
    """function_app.py is missing or fails to import, or has no app object (or an invalid one).

    The message is one line meant for the user. When the user's own code raised, :attr:`user_traceback`
    holds that traceback, limited to the frames in the app directory; otherwise it is empty.
    """

    def __init__(self, message: str, user_traceback: str = "") -> None:
        super().__init__(message)
        self.user_traceback = user_traceback


class InstanceExistsError(DurableExtError):
    """A start found an instance with the same ID in a status that may not be replaced (HTTP 409).

    :attr:`status` is that instance's runtime status (None if the row has none that is known).
    """

    http_status = 409
    caller_mistake = True

    def __init__(self, message: str, status: OrchestrationStatus | None = None) -> None:
        super().__init__(message)
        self.status = status


class InstanceNotFoundError(DurableExtError):
    """No instance (or entity) with the given ID exists in the task hub (HTTP 404)."""

    http_status = 404
    caller_mistake = True


class InvalidInstanceStateError(DurableExtError):
    """The operation does not apply to the instance's status, e.g. raising an event to a completed one.

    Durable Functions answers these with HTTP 410 Gone (raise event) or 400/409 (terminate, suspend, resume).
    """

    http_status = 409
    caller_mistake = True


class InstanceGoneError(InvalidInstanceStateError):
    """The instance has already ended (Completed, Failed, Terminated or Canceled): HTTP 410 Gone.

    Raised instead of the plain :class:`InvalidInstanceStateError` when the operation needs a running
    instance, so that callers can tell "too late" from "not in the right state yet".
    """

    http_status = 410


class InstanceNotEndedError(InvalidInstanceStateError):
    """The operation needs an ended instance (a purge): HTTP 412 Precondition Failed, as in DF."""

    http_status = 412


class InvalidOperationError(InvalidInstanceStateError):
    """An operation Durable Functions refuses with .NET's InvalidOperationException, which its management
    API answers with 500: suspending a suspended instance, resuming one that is not suspended.

    The message is DF's. A 500 it stays, because the df client and tools built on DF's API expect it.
    """

    http_status = 500


class ReplayMismatchError(DurableExtError):
    """Replaying a recorded history against the current orchestrator code found a difference.

    The message is the readable diff: the history event that recorded one thing, what the code does
    instead, and the orchestrator's source line. The parts are also attributes: :attr:`event_index`
    (position in the history, None when the code goes past its end), :attr:`recorded`, :attr:`actual`
    and :attr:`source` (``path:line``, None when unknown).
    """

    def __init__(
        self,
        message: str,
        *,
        event_index: int | None = None,
        recorded: str = "",
        actual: str = "",
        source: str | None = None,
    ) -> None:
        super().__init__(message)
        self.event_index = event_index
        self.recorded = recorded
        self.actual = actual
        self.source = source
