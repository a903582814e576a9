// The server's JSON API as the board calls it: the session's cookie and CSRF token on
// every change, a refusal as an ApiFailure carrying the server's status, code and message,
// and a sign-in that has ended handed to the page that said it can show that (the board,
// once it shows calls), or else sending the operator to the login page.
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

// Who is told that a request found the sign-in ended (null: the login page instead).
let signInEnded = null;

export function whenSignInEnds(handler) {
  signInEnded = handler;
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
  return answered(await sent(path, options));
}

// A file as the request's body (the register's import), with the CSRF token; the answer
// is read as api()'s is, and with `alsoOk` (e.g. 422, a file whose problems are the
// answer) a refusal's body is the answer too.
export async function upload(path, file, { alsoOk = [] } = {}) {
  if (state.connection === "signed_out") throw new ApiFailure(401, "unauthorised", "signed out");
  const headers = { Accept: "application/json", "Content-Type": "application/octet-stream", "X-CSRF-Token": state.me?.csrf_token ?? "" };
  return answered(await sent(path, { method: "POST", credentials: "same-origin", headers, body: file }), alsoOk);
}

async function sent(path, options) {
  try {
    return await fetch(path, options);
  } catch {
    throw new ApiFailure(0, "network", t("error.network"));
  }
}

async function answered(reply, alsoOk = []) {
  if (reply.status === 401) {
    // A request answered after the board showed the sign-in ended leaves that on screen.
    if (state.connection === "signed_out") {
      /* already said */
    } else if (signInEnded) signInEnded();
    else location.assign("/login");
    throw new ApiFailure(401, "unauthorised", "signed out");
  }
  const isJson = (reply.headers.get("Content-Type") ?? "").includes("json");
  const data = isJson ? await reply.json() : { message: await reply.text() };
  if (!reply.ok && !alsoOk.includes(reply.status)) {
    throw new ApiFailure(reply.status, data.error ?? String(reply.status), data.message ?? reply.statusText, data);
  }
  return data;
}

// The signed-in person's language, kept for their next sign-in and their texts; the
// page has already switched, so a failure only says so in the console.
export async function saveLanguage(language) {
  try {
    await api("POST", "/api/me/language", { language });
  } catch (failure) {
    console.warn("language not saved:", failure.message);
  }
}

// Sign out, then the sign-in page whatever the server answered.
export async function signOut() {
  try {
    await api("POST", "/logout", {});
  } finally {
    location.assign("/login");
  }
}
