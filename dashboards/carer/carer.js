// The carer page: one call, read from the data the server put in the page, and the
// buttons that answer it. The token in the address is the only credential: no cookie.
"use strict";

const TEXTS = {
  zh: {
    call: "呼叫", address: "地址", open_map: "打开地图", navigate: "导航",
    access: "入户说明", residents: "老人", none: "无",
    accept: "接单", decline: "拒绝", on_the_way: "出发", on_scene: "已到达",
    resolved: "完成并结案", outcome: "处理结果", age: "岁",
    expires: "链接有效至", sending: "正在提交……", failed: "提交失败，请重试或回复短信。",
    states: {
      raised: "等待处理", acknowledged: "已受理", dispatched: "已派单，等待接单",
      accepted: "已接单", on_the_way: "正在前往", on_scene: "已到场",
      awaiting_review: "已报告完成，待接线员复核", resolved: "已结案", cancelled: "已取消",
    },
    mine: {
      dispatched: "请接单或拒绝", accepted: "您已接单", on_the_way: "您正在前往",
      on_scene: "您已到场", declined: "您已拒绝", stood_down: "您已无需前往",
      finished: "已完成", no_answer: "已转派他人", unreachable: "已转派他人",
    },
    mobility: { independent: "", walking_aid: "需助行器", wheelchair: "坐轮椅", bedbound: "卧床" },
    outcomes: {
      helped_at_home: "居家处理", taken_to_hospital: "送医", false_alarm: "误报",
      emergency_services: "已呼叫120",
      no_access: "无法入户", family_attended: "家属已到场", device_fixed: "设备已修复",
      other: "其他",
    },
  },
  en: {
    call: "Call", address: "Address", open_map: "Open map", navigate: "Navigate",
    access: "Access", residents: "Residents", none: "none",
    accept: "Accept", decline: "Decline", on_the_way: "On the way", on_scene: "On scene",
    resolved: "Resolved: close the call", outcome: "Outcome", age: "",
    expires: "Link valid until", sending: "Sending…",
    failed: "Could not send; please try again or reply by SMS.",
    states: {
      raised: "waiting", acknowledged: "acknowledged", dispatched: "dispatched, waiting for a carer",
      accepted: "accepted", on_the_way: "carer on the way", on_scene: "carer on scene",
      awaiting_review: "reported done, awaiting the desk's review", resolved: "resolved",
      cancelled: "cancelled",
    },
    mine: {
      dispatched: "Please accept or decline", accepted: "You accepted", on_the_way: "You are on the way",
      on_scene: "You are on scene", declined: "You declined", stood_down: "You are stood down",
      finished: "Finished", no_answer: "Passed to someone else", unreachable: "Passed to someone else",
    },
    mobility: { independent: "", walking_aid: "walking aid", wheelchair: "wheelchair", bedbound: "bedbound" },
    outcomes: {
      helped_at_home: "helped at home", taken_to_hospital: "taken to hospital",
      emergency_services: "120 called (ambulance)",
      false_alarm: "false alarm", no_access: "no access", family_attended: "family attended",
      device_fixed: "device fixed", other: "other",
    },
  },
};

const data = JSON.parse(document.getElementById("call-data").textContent);
const lang = data.carer.language === "en" ? "en" : "zh";
const t = TEXTS[lang];
const $ = (id) => document.getElementById(id);

function residentLine(r) {
  const age = r.age ? (lang === "zh" ? `${r.age}${t.age}` : String(r.age)) : "";
  const about = [age, t.mobility[r.mobility] ?? r.mobility].filter(Boolean).join(lang === "zh" ? "，" : ", ");
  const li = document.createElement("li");
  const name = document.createElement("strong");
  name.textContent = r.name;
  li.append(name);
  if (about) li.append(lang === "zh" ? `（${about}）` : ` (${about})`);
  if (r.care_notes) {
    const notes = document.createElement("div");
    notes.textContent = r.care_notes;
    li.append(notes);
  }
  return li;
}

function showState(state, mine, buttons) {
  $("state").textContent = `${t.states[state] ?? state} · ${t.mine[mine] ?? mine}`;
  document.body.dataset.state = state;
  document.body.dataset.mine = mine;
  for (const button of document.querySelectorAll("[data-answer]")) {
    button.hidden = !buttons.includes(button.dataset.answer);
    button.disabled = false;
  }
  for (const group of document.querySelectorAll("[data-answer-group]")) {
    group.hidden = !buttons.includes(group.dataset.answerGroup);
  }
}

function say(text, done) {
  const box = $("message");
  box.textContent = text;
  box.classList.toggle("done", Boolean(done));
  box.hidden = !text;
}

async function answer(word) {
  const body = { answer: word };
  if (word === "resolved") body.outcome = $("outcome").value;
  for (const button of document.querySelectorAll("[data-answer]")) button.disabled = true;
  say(t.sending, false);
  let reply;
  try {
    reply = await fetch(`${location.pathname.replace(/\/$/, "")}/answer`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
      credentials: "omit",
    });
  } catch (error) {
    say(t.failed, false);
    showState(document.body.dataset.state, document.body.dataset.mine, data.buttons);
    return;
  }
  const result = await reply.json().catch(() => ({}));
  say(result.message || t.failed, reply.ok);
  if (result.call) {
    data.buttons = result.call.buttons;
    showState(result.call.state, result.call.mine, result.call.buttons);
  } else {
    data.buttons = [];
    showState(document.body.dataset.state, document.body.dataset.mine, []);
  }
}

// A moment as the district's clocks show it (the server's [district] timezone), never the
// phone's own zone: a carer roaming on another zone's network reads the desk's time.
function districtTime(iso) {
  const options = { year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit", hourCycle: "h23" };
  try {
    return new Intl.DateTimeFormat(lang === "zh" ? "zh-CN" : "en-GB", { ...options, timeZone: data.timezone }).format(new Date(iso));
  } catch {
    return new Intl.DateTimeFormat(lang === "zh" ? "zh-CN" : "en-GB", options).format(new Date(iso));
  }
}

function render() {
  document.documentElement.lang = lang;
  for (const node of document.querySelectorAll("[data-t]")) node.textContent = t[node.dataset.t];
  $("title").textContent = `${t.call} ${data.call} · ${data.type_name} · ${data.household}`;
  document.title = $("title").textContent;
  $("address").textContent = data.address;
  $("map-link").href = data.map_url;
  $("geo-link").href = data.geo_uri;
  $("access").textContent = data.access_notes || t.none;
  const list = $("residents");
  list.replaceChildren(...data.residents.map(residentLine));
  const select = $("outcome");
  select.replaceChildren(...data.outcomes.map((value) => {
    const option = document.createElement("option");
    option.value = value;
    option.textContent = t.outcomes[value] ?? value;
    return option;
  }));
  $("foot").textContent = `${data.carer.name} (${data.carer.code}) · ${t.expires} ${districtTime(data.link_expires_at)}`;
  for (const button of document.querySelectorAll("button[data-answer]")) {
    button.addEventListener("click", () => answer(button.dataset.answer));
  }
  showState(data.state, data.mine, data.buttons);
}

render();
