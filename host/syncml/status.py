"""SyncML / OMA DM / OMA DS status codes and alert codes, with names.

``STATUS_NAMES[code]`` and ``ALERT_NAMES[code]`` give the spec's wording;
the ``IntEnum`` classes give names to use in code (``StatusCode.AUTHENTICATION_ACCEPTED``).
"""
from __future__ import annotations

from enum import IntEnum

from host.errors import SyncMLError


class StatusCode(IntEnum):
    IN_PROGRESS = 101
    OK = 200
    ITEM_ADDED = 201
    ACCEPTED_FOR_PROCESSING = 202
    NON_AUTHORITATIVE_RESPONSE = 203
    NO_CONTENT = 204
    RESET_CONTENT = 205
    PARTIAL_CONTENT = 206
    CONFLICT_RESOLVED_WITH_MERGE = 207
    CONFLICT_RESOLVED_CLIENT_WON = 208
    CONFLICT_RESOLVED_WITH_DUPLICATE = 209
    DELETE_WITHOUT_ARCHIVE = 210
    ITEM_NOT_DELETED = 211
    AUTHENTICATION_ACCEPTED = 212
    CHUNKED_ITEM_ACCEPTED = 213
    OPERATION_CANCELLED = 214
    NOT_EXECUTED = 215
    ATOMIC_ROLLBACK_OK = 216
    MULTIPLE_CHOICES = 300
    MOVED_PERMANENTLY = 301
    FOUND = 302
    SEE_OTHER = 303
    NOT_MODIFIED = 304
    USE_PROXY = 305
    BAD_REQUEST = 400
    INVALID_CREDENTIALS = 401
    PAYMENT_REQUIRED = 402
    FORBIDDEN = 403
    NOT_FOUND = 404
    COMMAND_NOT_ALLOWED = 405
    OPTIONAL_FEATURE_NOT_SUPPORTED = 406
    MISSING_CREDENTIALS = 407
    REQUEST_TIMEOUT = 408
    CONFLICT = 409
    GONE = 410
    SIZE_REQUIRED = 411
    INCOMPLETE_COMMAND = 412
    REQUEST_ENTITY_TOO_LARGE = 413
    URI_TOO_LONG = 414
    UNSUPPORTED_MEDIA_TYPE = 415
    REQUESTED_SIZE_TOO_BIG = 416
    RETRY_LATER = 417
    ALREADY_EXISTS = 418
    CONFLICT_RESOLVED_WITH_SERVER_DATA = 419
    DEVICE_FULL = 420
    UNKNOWN_SEARCH_GRAMMAR = 421
    BAD_CGI_SCRIPT = 422
    SOFT_DELETE_CONFLICT = 423
    SIZE_MISMATCH = 424
    PERMISSION_DENIED = 425
    PARTIAL_ITEM_NOT_ACCEPTED = 426
    ITEM_NOT_EMPTY = 427
    MOVE_FAILED = 428
    COMMAND_FAILED = 500
    COMMAND_NOT_IMPLEMENTED = 501
    BAD_GATEWAY = 502
    SERVICE_UNAVAILABLE = 503
    GATEWAY_TIMEOUT = 504
    DTD_VERSION_NOT_SUPPORTED = 505
    PROCESSING_ERROR = 506
    ATOMIC_FAILED = 507
    REFRESH_REQUIRED = 508
    RECIPIENT_EXCEPTION_RESERVED = 509
    # 509 answering a Resume (225): the session cannot be resumed, the server's Alert names the sync
    # type instead (libsynthesis, SyncEvolution's engine, sends and understands it so)
    RESUME_NOT_POSSIBLE = 509
    DATASTORE_FAILURE = 510
    SERVER_FAILURE = 511
    SYNCHRONIZATION_FAILED = 512
    PROTOCOL_VERSION_NOT_SUPPORTED = 513
    OPERATION_CANCELLED_FAILED = 514
    ATOMIC_ROLLBACK_FAILED = 516
    ATOMIC_RESPONSE_TOO_LARGE = 517


STATUS_NAMES: dict[int, str] = {
    101: "In progress", 200: "OK", 201: "Item added", 202: "Accepted for processing",
    203: "Non-authoritative response", 204: "No content", 205: "Reset content",
    206: "Partial content", 207: "Conflict resolved with merge",
    208: "Conflict resolved with client's command winning",
    209: "Conflict resolved with duplicate", 210: "Delete without archive",
    211: "Item not deleted", 212: "Authentication accepted", 213: "Chunked item accepted",
    214: "Operation cancelled", 215: "Not executed", 216: "Atomic roll back OK",
    300: "Multiple choices", 301: "Moved permanently", 302: "Found", 303: "See other",
    304: "Not modified", 305: "Use proxy", 400: "Bad request", 401: "Invalid credentials",
    402: "Payment required", 403: "Forbidden", 404: "Not found", 405: "Command not allowed",
    406: "Optional feature not supported", 407: "Missing credentials", 408: "Request timeout",
    409: "Conflict", 410: "Gone", 411: "Size required", 412: "Incomplete command",
    413: "Request entity too large", 414: "URI too long", 415: "Unsupported media type or format",
    416: "Requested size too big", 417: "Retry later", 418: "Already exists",
    419: "Conflict resolved with server data", 420: "Device full",
    421: "Unknown search grammar", 422: "Bad CGI script", 423: "Soft-delete conflict",
    424: "Size mismatch", 425: "Permission denied", 426: "Partial item not accepted",
    427: "Item not empty", 428: "Move failed", 500: "Command failed",
    501: "Command not implemented", 502: "Bad gateway", 503: "Service unavailable",
    504: "Gateway timeout", 505: "DTD version not supported", 506: "Processing error",
    507: "Atomic failed", 508: "Refresh required", 509: "Reserved (to a Resume: resume not possible)",
    510: "Data store failure", 511: "Server failure", 512: "Synchronization failed",
    513: "Protocol version not supported", 514: "Operation cancelled",
    516: "Atomic roll back failed", 517: "Atomic response too large to fit",
}


class AlertCode(IntEnum):
    # OMA DS 1.2 sync types and session alerts
    DISPLAY = 100
    TWO_WAY = 200
    SLOW_SYNC = 201
    ONE_WAY_FROM_CLIENT = 202
    REFRESH_FROM_CLIENT = 203
    ONE_WAY_FROM_SERVER = 204
    REFRESH_FROM_SERVER = 205
    TWO_WAY_BY_SERVER = 206
    ONE_WAY_FROM_CLIENT_BY_SERVER = 207
    REFRESH_FROM_CLIENT_BY_SERVER = 208
    ONE_WAY_FROM_SERVER_BY_SERVER = 209
    REFRESH_FROM_SERVER_BY_SERVER = 210
    RESULT_ALERT = 221
    NEXT_MESSAGE = 222
    NO_END_OF_DATA = 223
    SUSPEND = 224
    RESUME = 225
    # OMA DM 1.2 alerts
    DM_DISPLAY = 1100
    DM_CONFIRM_OR_REJECT = 1101
    DM_TEXT_INPUT = 1102
    DM_SINGLE_CHOICE = 1103
    DM_MULTIPLE_CHOICE = 1104
    SERVER_INITIATED_MGMT = 1200
    CLIENT_INITIATED_MGMT = 1201
    NEXT_MESSAGE_DM = 1222
    SESSION_ABORT = 1223
    CLIENT_EVENT = 1224
    NO_END_OF_DATA_DM = 1225
    GENERIC_ALERT = 1226


ALERT_NAMES: dict[int, str] = {
    100: "Display", 200: "Two-way sync", 201: "Slow sync", 202: "One-way sync from client only",
    203: "Refresh sync from client only", 204: "One-way sync from server only",
    205: "Refresh sync from server only", 206: "Two-way sync, server alerted",
    207: "One-way from client, server alerted", 208: "Refresh from client, server alerted",
    209: "One-way from server, server alerted", 210: "Refresh from server, server alerted",
    221: "Result alert", 222: "Next message", 223: "No end of data", 224: "Suspend",
    225: "Resume", 1100: "Display", 1101: "Confirm or reject", 1102: "Text input",
    1103: "Single choice", 1104: "Multiple choice", 1200: "Server-initiated management",
    1201: "Client-initiated management", 1222: "Next message (more messages)",
    1223: "Session abort", 1224: "Client event", 1225: "No end of data",
    1226: "Generic alert",
}

#: DS alert codes that name a sync type (the Alert that opens a data store sync)
SYNC_TYPE_ALERTS = frozenset(range(200, 211))


def status_name(code: int) -> str:
    """The spec name of a status code, or its class (``"2xx success"``) when unnamed."""
    if code in STATUS_NAMES:
        return STATUS_NAMES[code]
    return {1: "informational", 2: "success", 3: "redirection", 4: "originator exception",
            5: "recipient exception"}.get(code // 100, "unknown") + f" ({code})"


def alert_name(code: int) -> str:
    return ALERT_NAMES.get(code, f"unknown alert ({code})")


def is_success(code: int) -> bool:
    """2xx codes (including 212/213/214) mean the command did what was asked."""
    return 200 <= code < 300


class SyncMLStatusError(SyncMLError):
    """A protocol error that maps to a status code the caller should send back."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status
