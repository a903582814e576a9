// The family portal: sign in with a texted code, then each household's calls, with a
// live line for an open call, refreshed every 10 s while one is open. Everything shown
// is set with textContent: names and addresses never become markup.
"use strict";

const POLL_MS = 10_000;

const TEXT = {
  zh: {
    title: "家属查询", sign_out: "退出", phone: "手机号码", send_code: "发送验证码",
    code: "短信验证码", sign_in: "登录", other_phone: "换一个号码",
    sign_in_intro: "请输入登记的家属手机号码，我们会发送一条验证码短信。",
    code_sent: (min) => `验证码已发送，请查看短信（${min}分钟内有效）。`,
    signed_in_as: (phone) => `已登录：${phone}`,
    no_households: "这个号码没有登记的家庭。", no_calls: "还没有呼叫记录。",
    residents: "居住人", raised: "呼叫时间", type: "类型", answered_by: "接听", carer: "上门护理员",
    arrived: "到达时间", outcome: "结果", to_acknowledge: "接听用时", to_accepted: "护理员接单用时",
    to_on_scene: "到达用时", open: "处理中", seconds: (s) => `${s}秒`,
    minutes: (m, s) => (s ? `${m}分${s}秒` : `${m}分钟`),
    live: {
      raised: () => "呼叫中心已收到呼叫，正在处理。",
      operator_handling: () => "值班员正在处理这次呼叫。",
      carer_asked: (c) => `已通知护理员 ${c}，等待确认。`,
      on_the_way: (c, eta) => (eta ? `护理员 ${c} 正在赶来，约 ${eta} 分钟` : `护理员 ${c} 正在赶来`),
      on_scene: (c) => `护理员 ${c} 已到达，正在照顾您的家人。`,
      being_reviewed: (c) => (c ? `护理员 ${c} 已上门处理，呼叫中心正在复核。` : "呼叫中心正在复核这次呼叫。"),
    },
    types: { emergency: "紧急呼叫", fall: "跌倒", service_request: "服务请求",
             device_offline: "设备离线", low_battery: "电量低",
             device_clock: "设备时钟错误", voice: "来电" },
    outcomes: { helped_at_home: "已在家中处理", taken_to_hospital: "已送医院",
                emergency_services: "已呼叫120急救",
                false_alarm: "误报", no_access: "无法进门，已转交", family_attended: "家属已到场",
                device_fixed: "设备已修复", other: "其他", resident_cancelled: "老人取消",
                duplicate: "重复呼叫", entered_in_error: "误录" },
    failed: "出错了，请稍后再试。",
  },
  en: {
    title: "Family", sign_out: "Sign out", phone: "Mobile number", send_code: "Text me a code",
    code: "Code from the SMS", sign_in: "Sign in", other_phone: "Use another number",
    sign_in_intro: "Enter the mobile number the call centre has for you; we will text you a code.",
    code_sent: (min) => `A code is on its way by SMS (it works for ${min} minutes).`,
    signed_in_as: (phone) => `Signed in: ${phone}`,
    no_households: "No household lists this number.", no_calls: "No calls yet.",
    residents: "Residents", raised: "Raised", type: "Type", answered_by: "Answered by",
    carer: "Carer", arrived: "Arrived", outcome: "Outcome", to_acknowledge: "Time to answer",
    to_accepted: "Time to carer accepting", to_on_scene: "Time to arrival", open: "In progress",
    seconds: (s) => `${s} s`, minutes: (m, s) => (s ? `${m} min ${s} s` : `${m} min`),
    live: {
      raised: () => "The call centre has the call and is handling it.",
      operator_handling: () => "An operator is handling the call.",
      carer_asked: (c) => `Carer ${c} has been asked to go.`,
      on_the_way: (c, eta) => (eta ? `Carer ${c} is on the way, about ${eta} min` : `Carer ${c} is on the way`),
      on_scene: (c) => `Carer ${c} has arrived and is with your relative.`,
      being_reviewed: (c) => (c ? `Carer ${c} has been; the call centre is checking before it closes the call.` : "The call centre is checking the call before it closes it."),
    },
    types: { emergency: "Emergency", fall: "Fall", service_request: "Help wanted",
             device_offline: "Device offline", low_battery: "Low battery",
             device_clock: "Device clock wrong", voice: "Phone call in" },
    outcomes: { helped_at_home: "Helped at home", taken_to_hospital: "Taken to hospital",
                emergency_services: "Ambulance (120) called",
                false_alarm: "False alarm", no_access: "No access; handed on",
                family_attended: "Family attended", device_fixed: "Device fixed", other: "Other",
                resident_cancelled: "Cancelled by the resident", duplicate: "Duplicate",
                entered_in_error: "Entered in error" },
    failed: "Something went wrong; please try again shortly.",
  },
};

const state = { lang: "zh", csrf: "", timezone: "Asia/Shanghai", poll: null, phone: "" };

const $ = (id) => document.getElementById(id);

function t() {
  return TEXT[state.lang];
}

function chosenLanguage() {
  const kept = localStorage.getItem("family.language");
  if (kept === "zh" || kept === "en") return kept;
  return (navigator.language || "zh").toLowerCase().startsWith("zh") ? "zh" : "en";
}

function translateStatic() {
  document.documentElement.lang = state.lang;
  for (const el of document.querySelectorAll("[data-t]")) {
    el.textContent = t()[el.dataset.t];
  }
  $("language").textContent = state.lang === "zh" ? "English" : "中文";
  // One language at a time, the tab's title included.
  document.title = state.lang === "zh" ? "家属查询 — 呼叫中心" : "Family — Call centre";
}

function showError(message) {
  const box = $("error");
  box.textContent = message || "";
  box.hidden = !message;
}

async function call(method, path, body) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET" && state.csrf) headers["X-CSRF-Token"] = state.csrf;
  const reply = await fetch(path, {
    method, headers, credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  let data = {};
  try { data = await reply.json(); } catch { data = {}; }
  return { status: reply.status, data };
}

function when(iso) {
  if (!iso) return "—";
  return new Intl.DateTimeFormat(state.lang === "zh" ? "zh-CN" : "en-GB", {
    timeZone: state.timezone, dateStyle: "medium", timeStyle: "short",
  }).format(new Date(iso));
}

function duration(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  if (seconds < 60) return t().seconds(seconds);
  return t().minutes(Math.floor(seconds / 60), seconds % 60);
}

function element(tag, className, text) {
  const el = document.createElement(tag);
  if (className) el.className = className;
  if (text !== undefined) el.textContent = text;
  return el;
}

function liveLine(live) {
  const say = t().live[live.stage] || t().live.raised;
  const line = element("p", "live", say(live.carer, live.eta_min));
  line.dataset.stage = live.stage;
  line.setAttribute("role", "status");
  return line;
}

function callItem(c) {
  const item = element("li", "call");
  item.dataset.callId = String(c.id);
  item.append(element("div", "when", `${when(c.raised_at)} · ${t().types[c.type] || c.type}`));
  if (c.live) item.append(liveLine(c.live));
  const facts = element("dl");
  const outcome = c.closed_at ? (t().outcomes[c.outcome] || c.outcome || "—") : t().open;
  for (const [label, value] of [
    [t().answered_by, c.answered_by || "—"],
    [t().carer, c.carer || "—"],
    [t().arrived, when(c.on_scene_at)],
    [t().outcome, outcome],
    [t().to_acknowledge, duration(c.response.to_acknowledge_s)],
    [t().to_accepted, duration(c.response.to_carer_accepted_s)],
    [t().to_on_scene, duration(c.response.to_on_scene_s)],
  ]) {
    facts.append(element("dt", "", label), element("dd", "", value));
  }
  item.append(facts);
  return item;
}

async function loadPortal() {
  const homes = await call("GET", "/family/api/households");
  if (homes.status === 401) return signedOut();
  if (homes.status !== 200) return showError(homes.data.message || t().failed);
  const box = $("households");
  const sections = [];
  let anyOpen = false;
  for (const home of homes.data.households) {
    const calls = await call("GET", `/family/api/households/${encodeURIComponent(home.code)}/calls`);
    if (calls.status === 401) return signedOut();
    const section = element("article", "household");
    section.dataset.household = home.code;
    section.append(element("h2", "", home.residents.join("、") || home.code));
    section.append(element("p", "address", home.address));
    const list = element("ol", "calls");
    for (const c of calls.data.calls || []) {
      anyOpen = anyOpen || c.closed_at === null;
      list.append(callItem(c));
    }
    if (!list.children.length) section.append(element("p", "empty", t().no_calls));
    section.append(list);
    sections.push(section);
  }
  if (!sections.length) sections.push(element("p", "empty", t().no_households));
  box.replaceChildren(...sections);
  showError("");
  $("who").textContent = t().signed_in_as(state.phone);
  document.body.dataset.open = anyOpen ? "yes" : "no";
  clearTimeout(state.poll);
  if (anyOpen) state.poll = setTimeout(loadPortal, POLL_MS);
}

function signedOut() {
  clearTimeout(state.poll);
  location.assign("/family/login");
}

async function showSignIn() {
  document.body.dataset.view = "sign-in";
  $("sign-in").hidden = false;
  const token = await call("GET", "/family/api/sign-in");
  state.csrf = token.data.csrf_token || "";
}

async function askForCode(event) {
  event.preventDefault();
  const phone = $("phone").value.trim();
  const reply = await call("POST", "/family/api/code", { phone });
  if (reply.status !== 202) return showError(reply.data.message || t().failed);
  showError("");
  state.phone = phone;
  $("code-sent").textContent = t().code_sent(reply.data.expires_in_min);
  $("phone-form").hidden = true;
  $("code-form").hidden = false;
  $("code").focus();
}

async function verifyCode(event) {
  event.preventDefault();
  const reply = await call("POST", "/family/api/verify", { phone: state.phone, code: $("code").value.trim() });
  if (reply.status !== 200) {
    $("code").value = "";
    return showError(reply.data.message || t().failed);
  }
  location.assign("/family");
}

async function signOut() {
  await call("POST", "/family/api/logout", {});
  signedOut();
}

async function boot() {
  state.lang = chosenLanguage();
  translateStatic();
  $("language").addEventListener("click", () => {
    state.lang = state.lang === "zh" ? "en" : "zh";
    localStorage.setItem("family.language", state.lang);
    translateStatic();
    if (document.body.dataset.view === "portal") loadPortal();
  });
  $("phone-form").addEventListener("submit", askForCode);
  $("code-form").addEventListener("submit", verifyCode);
  $("other-phone").addEventListener("click", () => {
    $("code-form").hidden = true;
    $("phone-form").hidden = false;
  });
  $("sign-out").addEventListener("click", signOut);
  // The server sends a signed-in phone from /family/login to /family and anyone else the
  // other way, so the sign-in page need not ask who is signed in.
  if (location.pathname === "/family/login") return showSignIn();
  const me = await call("GET", "/family/api/me");
  if (me.status !== 200) return signedOut();
  state.csrf = me.data.csrf_token;
  state.timezone = me.data.timezone;
  if (!localStorage.getItem("family.language")) {
    state.lang = me.data.language === "en" ? "en" : "zh";
    translateStatic();
  }
  state.phone = me.data.phone;
  document.body.dataset.view = "portal";
  $("portal").hidden = false;
  $("sign-out").hidden = false;
  await loadPortal();
}

boot();
