// The server's JSON API as the board calls it: the session's cookie and CSRF token on
// every change, a refusal as an ApiFailure carrying the server's status, code and message,
// and a sign-in that has ended sending the operator to the login page.
import { t } from "./i18n.js";
import { state } from "./state.js";

export class ApiFailure extends Error {
  constructor(status, code, message, body) {
    super(message);
    this.status = status;
    this.code = code;
    this.body = body;
  }
}

export async function api(method, path, body) {
  // Signed out: nothing more is asked for (refreshes in hand and timers included).
  if (state.connection === "signed_out") throw new ApiFailure(401, "unauthorised", "signed out");
  const options = { method, credentials: "same-origin", headers: { Accept: "application/json" } };
  if (method !== "GET") {
    options.headers["Content-Type"] = "application/json";
    options.headers["X-CSRF-Token"] = state.me?.csrf_token ?? "";
    options.body = JSON.stringify(body ?? {});
  }
  let reply;
  try {
    reply = await fetch(path, options);
  } catch {
    throw new ApiFailure(0, "network", t("error.network"));
  }
  if (reply.status === 401) {
    // A request answered after the feed said why the sign-in ended leaves that on screen.
    if (state.connection !== "signed_out") location.assign("/login");
    throw new ApiFailure(401, "unauthorised", "signed out");
  }
  const isJson = (reply.headers.get("Content-Type") ?? "").includes("json");
  const data = isJson ? await reply.json() : { message: await reply.text() };
  if (!reply.ok) {
    throw new ApiFailure(reply.status, data.error ?? String(reply.status), data.message ?? reply.statusText, data);
  }
  return data;
}
