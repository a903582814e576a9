"""A call from the first press to its closure, decided as a pure state machine.

This module is the package's one public face: code outside the package imports from
``callcenter.domain.calls`` and never from the modules below, which split the call by
concern:

- ``model``: the call, its states, the carers assigned to it, and who acts on it;
- ``commands``: the situation a decision reads, the commands, the effects, the errors;
- ``decisions``: a decision (new call, history, effects) and the pieces it is built from;
- ``lifecycle``: ``open_call`` and ``decide``, with the desk's, carers' and devices'
  commands;
- ``escalation``: paging carers, and the policy's escalation steps when nobody goes.

Names with a leading underscore are shared between these modules and go no further.
"""

from callcenter.domain.calls.commands import (
    SUPERVISOR_RECIPIENT,
    Acknowledge,
    AddNote,
    AlertDesk,
    AlreadyOwnedError,
    AnswerScript,
    ArmTimer,
    AutoDispatch,
    CallError,
    Cancel,
    CancelTimers,
    CarerReport,
    Command,
    DeviceCancel,
    DeviceCommand,
    DeviceNote,
    Dispatch,
    Effect,
    IllegalTransitionError,
    NotOwnerError,
    NotPossibleError,
    Person,
    PlaceCall,
    Press,
    Report,
    Resolve,
    RingNoted,
    RingUnanswered,
    SendSms,
    Situation,
    StandDown,
    StepDue,
    TextFailed,
    Unreachable,
    VoicePurpose,
)
from callcenter.domain.calls.decisions import Decision, HistoryEntry
from callcenter.domain.calls.escalation import NOBODY_TO_SEND, DispatchResult, dispatch_result
from callcenter.domain.calls.lifecycle import PRESS_NOTE_INTERVAL, decide, open_call
from callcenter.domain.calls.model import (
    ACTIVE_ASSIGNMENT,
    CONFIRMED_OUTCOMES,
    FAILED_ASSIGNMENT,
    NEEDS_REASON_WITHOUT_CARER,
    OPEN_STATES,
    SYSTEM,
    Actor,
    ActorKind,
    Assignment,
    AssignmentState,
    Call,
    CallState,
    CancelReason,
    Outcome,
    reason_needed,
)

__all__ = [
    "ACTIVE_ASSIGNMENT",
    "CONFIRMED_OUTCOMES",
    "FAILED_ASSIGNMENT",
    "NEEDS_REASON_WITHOUT_CARER",
    "NOBODY_TO_SEND",
    "OPEN_STATES",
    "PRESS_NOTE_INTERVAL",
    "SUPERVISOR_RECIPIENT",
    "SYSTEM",
    "Acknowledge",
    "Actor",
    "ActorKind",
    "AddNote",
    "AlertDesk",
    "AlreadyOwnedError",
    "AnswerScript",
    "ArmTimer",
    "Assignment",
    "AssignmentState",
    "AutoDispatch",
    "Call",
    "CallError",
    "CallState",
    "Cancel",
    "CancelReason",
    "CancelTimers",
    "CarerReport",
    "Command",
    "Decision",
    "DeviceCancel",
    "DeviceCommand",
    "DeviceNote",
    "Dispatch",
    "DispatchResult",
    "Effect",
    "HistoryEntry",
    "IllegalTransitionError",
    "NotOwnerError",
    "NotPossibleError",
    "Outcome",
    "Person",
    "PlaceCall",
    "Press",
    "Report",
    "Resolve",
    "RingNoted",
    "RingUnanswered",
    "SendSms",
    "Situation",
    "StandDown",
    "StepDue",
    "TextFailed",
    "Unreachable",
    "VoicePurpose",
    "decide",
    "dispatch_result",
    "open_call",
    "reason_needed",
]
