// What the board knows: the last snapshot and every message after it, who is signed in,
// which call is open in the detail panel, and the helpers that read it (alarm or not,
// most urgent first, names). Data only, no page: every view reads it and redraws from it.
// A field is written where its news arrives: board.js (the feed, the sign-in and its
// end), detail.js (the selected call), banners.js (connection, health), service.js (the
// figures it asks for), clock.js (the server's clock).

// The states of a call that is still open (a call in any other state leaves the board).
// awaiting_review: a carer reported an emergency or fall done that no operator had taken;
// it stays on the board until an operator resolves it.
export const OPEN_STATES = new Set(["raised", "acknowledged", "dispatched", "accepted", "on_the_way", "on_scene", "awaiting_review"]);
export const ROLE_RANK = { operator: 1, supervisor: 2, admin: 3 };
const ALARM_TYPES = new Set(["emergency", "fall"]);

export const state = {
  me: null,
  timezone: "Asia/Shanghai",
  calls: new Map(),
  carers: [],
  stations: [],
  service: {},
  // The server's parts stuck for too long (GET /healthz, as the feed says): a banner.
  health: { failing: [] },
  // Server time minus client time, from the last message that said what time it was.
  offsetMs: 0,
  connection: "connecting",
  selected: null,
  detail: null,
  candidates: null,
  lastCalls: null,
  // Why the sign-in ended, once the server has said so (the board then stays signed out).
  ended: null,
  // The operators on duty, paused or off duty, and what each holds (duty.js).
  operators: [],
};

// An emergency or fall, taken or not (the map's legend and the wallboard's "alarms open").
export function isAlarmType(call) {
  return ALARM_TYPES.has(call.call_type);
}

// An emergency or fall nobody has taken yet: the loud kind.
export function isAlarm(call) {
  return ALARM_TYPES.has(call.call_type) && !call.acknowledged_at && !call.owner && OPEN_STATES.has(call.state);
}

export function rank() {
  return ROLE_RANK[state.me?.role] ?? 0;
}

export function carerName(code) {
  return state.carers.find((carer) => carer.code === code)?.name ?? "";
}

export function ownerName(actor) {
  const [, username] = String(actor).split(":");
  if (state.me && actor === state.me.actor) return `${state.me.name} (${username})`;
  // language (issue 19): a colleague by name once the board knows the operators on duty.
  const known = (state.operators ?? []).find((operator) => operator.actor === actor)?.name;
  return known ?? username ?? actor;
}

// --- dense's block: the order of the list, device faults, offers (issue 19) ---

// Calls about a device rather than a person: their own tab, never among the alarms.
export const DEVICE_FAULT_TYPES = new Set(["device_offline", "device_clock", "low_battery"]);

export function isDeviceFault(call) {
  return DEVICE_FAULT_TYPES.has(call.call_type);
}

// Offered to the signed-in operator (docs/calls.md "offers"): to them by name, or to
// every operator once the offers ran out. Tolerates a server without offers.
export function isOfferedToMe(call) {
  const offer = call.offer;
  if (!offer || !state.me) return false;
  return offer.operator === state.me.actor || (offer.to_all === true && !call.owner);
}

export function isMine(call) {
  return Boolean(state.me) && call.owner === state.me.actor;
}

// Which band of the list a call sits in: 0 offered to me, 1 owned by me, 2 an emergency
// or fall nobody has taken, 3 the rest.
export function band(call) {
  if (isOfferedToMe(call)) return 0;
  if (isMine(call)) return 1;
  if (isAlarm(call)) return 2;
  return 3;
}

// The list's order: offered to me, then mine, then the alarms nobody has taken, then the
// rest; in each band most urgent first (priority, then most presses), then longest waiting.
export function sortedCalls() {
  return [...state.calls.values()].sort(
    (a, b) =>
      band(a) - band(b) ||
      a.priority - b.priority ||
      (b.presses ?? 1) - (a.presses ?? 1) ||
      Date.parse(a.opened_at) - Date.parse(b.opened_at) ||
      a.id - b.id,
  );
}
