"""How failures read: the texts the Functions host and the Durable Functions extension write for a
Python app's failed activity, orchestrator or sub-orchestration.

Under the Functions host, the Python worker reports a failed function as ``{type}: {message}`` with the
function's traceback frames, and the host wraps that in an ``RpcException`` whose message is
``Result: Failure\\nException: {worker message}\\nStack: {frames}``. The extension then writes:

- for an activity (``TaskActivityShim``): TaskFailed ``Reason`` ``Activity function '{name}' failed:
  {friendly}``, where ``friendly`` is the text between ``\\nException:`` and ``\\nStack:`` (so it keeps
  the space after the colon), and ``Details`` the exception serialized by its error data converter
  (Newtonsoft, ``TypeNameHandling.Objects``). df 1.7 raises ``Exception(f"{Reason} \\n {Details}")`` in
  the orchestrator, which is what ``str(e)`` shows the user;
- for an orchestrator (``OutOfProcOrchestrationShim``): ``Orchestrator function '{name}' failed:
  {error}``, ``error`` being df's ``str(exception)``, as the ExecutionCompleted ``Result`` (hence the
  Instances row's ``Output``) and the parent's SubOrchestrationInstanceFailed ``Reason``, with
  ``Message: {error}, StackTrace: {stack}`` as its ``Details``.

The extension runs with ``ErrorPropagationMode.SerializeExceptions``, so none of these events carries a
``FailureDetails`` object. Stacks here hold only the app's frames: the frames of durable_ext and of the
libraries that called into the app are not the user's concern (under the host they would be the
worker's).
"""

from __future__ import annotations

import json
import sysconfig
import traceback
from pathlib import Path
from types import TracebackType

import anyio
import azure.durable_functions
import azure.functions
import starlette

_EXCEPTION_CLASS = ("System.Exception", "System.Private.CoreLib")
_FUNCTION_FAILED_CLASS = (
    "Microsoft.Azure.WebJobs.Extensions.DurableTask.FunctionFailedException",
    "Microsoft.Azure.WebJobs.Extensions.DurableTask",
)
_RPC_EXCEPTION_TYPE = (
    "Microsoft.Azure.WebJobs.Script.Workers.Rpc.RpcException, Microsoft.Azure.WebJobs.Script"
)
_EXCEPTION_HRESULT = -2146233088
"""``COR_E_EXCEPTION``, the HResult of a plain ``System.Exception``."""
_UNSERIALIZABLE_MESSAGE = "Unhandled exception in function. Could not serialize original exception message."
"""What the Python worker reports when the exception's ``str`` itself raises."""

_OWN_ROOT = str(Path(__file__).resolve().parent)
_CALLER_ROOTS = tuple(
    str(Path(p).resolve())
    for p in (
        _OWN_ROOT,
        next(iter(azure.durable_functions.__path__)),
        next(iter(azure.functions.__path__)),
        next(iter(starlette.__path__)),
        next(iter(anyio.__path__)),
    )
)
"""Packages whose frames stand between the engine and the app's code (durable_ext, df, azure.functions,
and starlette and anyio, which run HTTP functions on their threads)."""
_STDLIB_ROOT = str(Path(sysconfig.get_paths()["stdlib"]).resolve())
_SITE_ROOTS = tuple(str(Path(sysconfig.get_paths()[key]).resolve()) for key in ("purelib", "platlib"))


def _under(filename: str, roots: tuple[str, ...]) -> bool:
    return any(filename == root or filename.startswith(root + "/") for root in roots)


def _is_caller_frame(filename: str) -> bool:
    """Whether a frame belongs to the machinery that invoked the app (not to the app or its libraries)."""
    if filename.startswith("<"):
        return True  # frozen importlib and the like
    resolved = str(Path(filename).resolve())
    if _under(resolved, _CALLER_ROOTS):
        return True
    return _under(resolved, (_STDLIB_ROOT,)) and not _under(resolved, _SITE_ROOTS)


def _is_own_frame(filename: str) -> bool:
    return _under(str(Path(filename).resolve()), (_OWN_ROOT,))


def user_stack(tb: TracebackType | None) -> str:
    """The traceback frames from the app's first frame on, durable_ext's left out, formatted as the
    Python worker formats a failed function's stack (``File "…", line N, in f`` lines, no header)."""
    frames = traceback.extract_tb(tb)
    first = next((i for i, f in enumerate(frames) if not _is_caller_frame(f.filename)), 0)
    kept = [f for f in frames[first:] if not _is_own_frame(f.filename)]
    return "".join(traceback.StackSummary.from_list(kept).format())


def worker_message(exc: BaseException) -> str:
    """The message the Python worker reports for a function that raised ``exc``."""
    try:
        return f"{type(exc).__name__}: {exc}"
    except Exception:  # a broken __str__ must not hide the failure itself
        return _UNSERIALIZABLE_MESSAGE


def activity_failure(name: str, exc: BaseException) -> tuple[str, str]:
    """TaskFailed ``Reason`` and ``Details`` for activity ``name`` that raised ``exc``."""
    message = worker_message(exc)
    stack = user_stack(exc.__traceback__)
    # The host cuts the message out of "…\nException: {message}\nStack: …" after the colon, space included.
    friendly = f" {message}"
    rpc = {
        "$type": _RPC_EXCEPTION_TYPE,
        "RemoteStackTrace": stack,
        "RemoteMessage": message,
        "Message": f"Result: Failure\nException: {message}\nStack: {stack}",
        "HResult": _EXCEPTION_HRESULT,
    }
    details = _serialized_exception(_EXCEPTION_CLASS, friendly, rpc)
    return f"Activity function '{name}' failed: {friendly}", details


def missing_activity_failure(name: str) -> tuple[str, str]:
    """TaskFailed ``Reason`` and ``Details`` for a work item naming an activity the app does not have
    (the extension's ``TaskNonexistentActivityShim``)."""
    message = f"Activity function '{name}' does not exist."
    details = _serialized_exception(_FUNCTION_FAILED_CLASS, message, None)
    return f"Activity function '{name}' failed: {message}", details


HTTP_REQUEST_EXCEPTION = ("System.Net.Http.HttpRequestException", "System.Net.Http")
"""What a durable HTTP request that got no answer fails with."""
NOT_SUPPORTED_EXCEPTION = ("System.NotSupportedException", "System.Private.CoreLib")
ARGUMENT_EXCEPTION = ("System.ArgumentException", "System.Private.CoreLib")
FUNCTION_FAILED_EXCEPTION = _FUNCTION_FAILED_CLASS


def http_failure(message: str, dotnet_class: tuple[str, str] = HTTP_REQUEST_EXCEPTION) -> tuple[str, str]:
    """TaskFailed ``Reason`` and ``Details`` of a ``BuiltIn::HttpActivity`` task: the extension fails it
    with the exception's own message (no "Activity function ... failed" prefix)."""
    return message, _serialized_exception(dotnet_class, message, None)


def orchestrator_failure(name: str, error: str, tb: TracebackType | None) -> tuple[str, str]:
    """ExecutionCompleted ``Result`` and the failure's ``Details`` for orchestrator ``name`` that
    failed with df's error text ``error``; ``tb`` is the traceback of the app's exception."""
    details = f"Message: {error}, StackTrace: {user_stack(tb)}"
    return f"Orchestrator function '{name}' failed: {error}", details


def _serialized_exception(
    dotnet_class: tuple[str, str], message: str, inner: dict[str, object] | None
) -> str:
    """An exception of ``dotnet_class`` (type and assembly name) as the extension's error data
    converter writes it: its ISerializable members in order, compact, non-ASCII kept."""
    class_name, assembly = dotnet_class
    data = {
        "$type": f"{class_name}, {assembly}",
        "ClassName": class_name,
        "Message": message,
        "Data": None,
        "InnerException": inner,
        "HelpURL": None,
        "StackTraceString": None,
        "RemoteStackTraceString": None,
        "RemoteStackIndex": 0,
        "ExceptionMethod": None,
        "HResult": _EXCEPTION_HRESULT,
        "Source": None,
        "WatsonBuckets": None,
    }
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)
