// Runs deploy/static/deploy/deploy.js against a fake DOM, WebSocket and timer, then prints
// what it did as JSON. Usage: node page_harness.js SCRIPT PROTOCOL HOST SERVICE [SCENARIO]
// SCENARIO: "basic" (the default: frames, sending, backoff, 4400), "resume" (positions,
// duplicates, resumed/gap lines, the 4012 drain), "read-only" (a grant that may not send),
// "open" (no grant needed), "signed-out" (the grant view answers 401) or "grant-error" (500, then
// a grant).
"use strict";

const fs = require("fs");
const vm = require("vm");

const [scriptPath, protocol, host, service, scenario = "basic"] = process.argv.slice(2);

class FakeElement {
  constructor(tag) {
    this.tag = tag;
    this.children = [];
    this.dataset = {};
    this.listeners = {};
    this.textContent = "";
    this.value = "";
    this.className = "";
    this.scrollTop = 0;
    this.scrollHeight = 0;
    this.clientHeight = 0;
  }
  appendChild(child) {
    this.children.push(child);
    return child;
  }
  addEventListener(type, listener) {
    this.listeners[type] = listener;
  }
  set innerHTML(value) {
    throw new Error("innerHTML must not be used");
  }
}

const elements = {};
for (const id of ["deploy", "log", "state", "send-form", "message", "service-form", "service-name"]) {
  elements[id] = new FakeElement(id);
}
elements.deploy.dataset.service = service;
elements.deploy.dataset.grantUrl = `/deploy/${service}/grant/`;

// fetch() of the grant view, answered at once: a thenable that calls back synchronously, so the
// scenarios read like the sequence of events they check.
function settled(value, failed) {
  return {
    then(onValue, onError) {
      const callback = failed ? onError : onValue;
      if (!callback) return this;
      try {
        const next = callback(value);
        return next && typeof next.then === "function" ? next : settled(next, false);
      } catch (error) {
        return settled(error, true);
      }
    },
    catch(onError) {
      return this.then(null, onError);
    },
  };
}
const grantAnswers = {
  basic: [{ status: 200, body: { grant: "TOKEN.sig", write: true } }],
  resume: [{ status: 200, body: { grant: "TOKEN.sig", write: true } }],
  "read-only": [{ status: 200, body: { grant: "TOKEN.sig", write: false } }],
  open: [{ status: 200, body: { grant: null, write: true } }],
  "signed-out": [{ status: 401, body: { error: "sign in to read this service" } }],
  "grant-error": [{ status: 500, body: { error: "boom" } }, { status: 200, body: { grant: "T2.sig", write: true } }],
}[scenario];
const fetches = [];
function fakeFetch(url, options) {
  fetches.push({ url, credentials: options.credentials, cache: options.cache });
  const answer = grantAnswers.length > 1 ? grantAnswers.shift() : grantAnswers[0];
  return settled({
    status: answer.status,
    ok: answer.status >= 200 && answer.status < 300,
    json: () => settled(answer.body, false),
  });
}

const sockets = [];
class FakeWebSocket {
  constructor(url, protocols) {
    this.url = url;
    this.protocols = protocols;
    this.sent = [];
    this.readyState = 0;
    sockets.push(this);
  }
  send(data) {
    this.sent.push(data);
  }
}
FakeWebSocket.OPEN = 1;

const timers = [];
const assigned = [];
const window = {
  location: { protocol, host, assign: (url) => assigned.push(url) },
  setTimeout: (callback, delay) => timers.push({ callback, delay }),
  fetch: fakeFetch,
};
const document = {
  getElementById: (id) => elements[id],
  createElement: (tag) => new FakeElement(tag),
  createTextNode: (text) => ({ text }),
};

vm.runInNewContext(fs.readFileSync(scriptPath, "utf8"), {
  window,
  document,
  WebSocket: FakeWebSocket,
  Math,
  JSON,
  String,
});

function lines() {
  return elements.log.children.map((item) => ({
    className: item.className,
    text: item.children.map((child) => child.textContent || child.text).join(""),
  }));
}

function basicScenario() {
  const result = { urls: [], states: [], delays: [] };
  const first = sockets[0];
  result.urls.push(first.url);
  result.states.push(elements.state.textContent);

  first.readyState = 1;
  first.onopen();
  result.states.push(elements.state.textContent);

  const hostile = "<img src=x onerror=alert(1)>";
  const ts = "2026-01-02T03:04:05+00:00";
  first.onmessage({
    data: JSON.stringify({ type: "message", service, message: hostile, seq: 1, ts, source: "push" }),
  });
  first.onmessage({ data: JSON.stringify({ type: "error", error: "frame is not valid JSON" }) });
  first.onmessage({ data: "not json" });
  result.lines = lines();

  elements.message.value = "hello";
  elements["send-form"].listeners.submit({ preventDefault() {} });
  result.sent = first.sent;
  result.inputCleared = elements.message.value === "";

  // Drop the connection ten times: every reconnect is scheduled with a capped, jittered delay.
  let socket = first;
  for (let i = 0; i < 10; i++) {
    socket.onclose({ code: 1006 });
    result.states.push(elements.state.textContent);
    const timer = timers.shift();
    result.delays.push(timer.delay);
    timer.callback();
    socket = sockets[sockets.length - 1];
  }
  result.socketsOpened = sockets.length;

  // A 4400 close (invalid service) is final.
  socket.onclose({ code: 4400 });
  result.finalState = elements.state.textContent;
  result.timersAfter4400 = timers.length;

  elements["service-name"].value = "other svc";
  elements["service-form"].listeners.submit({ preventDefault() {} });
  result.assigned = assigned;
  return result;
}

function frame(socket, data) {
  socket.onmessage({ data: JSON.stringify(data) });
}

function resumeScenario() {
  const result = { urls: [], states: [], delays: [], drainDelays: [] };
  const ts = "2026-01-02T03:04:05+00:00";
  const message = (id, epoch, text, extra) =>
    Object.assign({ type: "message", service, message: text, seq: 1, ts, source: "push", id, epoch }, extra);
  const reconnect = (socket, code, delays) => {
    socket.onclose({ code });
    result.states.push(elements.state.textContent);
    const timer = timers.shift();
    delays.push(timer.delay);
    timer.callback();
    const next = sockets[sockets.length - 1];
    result.urls.push(next.url);
    next.readyState = 1;
    next.onopen();
    return next;
  };

  let socket = sockets[0];
  result.urls.push(socket.url);
  socket.readyState = 1;
  socket.onopen();
  frame(socket, { type: "hello", service, epoch: "", last: "0-0" });
  frame(socket, message("1700000000000-9", "E1", "nine"));
  frame(socket, message("1700000000000-10", "E1", "ten")); // (ms, n) pairs, not strings
  frame(socket, message("1700000000000-10", "E1", "duplicate"));
  frame(socket, message("999-5", "E1", "older"));

  // Drained: reconnect within a second, from the position.
  socket = reconnect(socket, 4012, result.drainDelays);
  frame(socket, { type: "hello", service, epoch: "E1", last: "1700000000001-0" });
  frame(socket, message("1700000000000-10", "E1", "replayed duplicate", { replay: true }));
  frame(socket, message("1700000000001-0", "E1", "recovered", { replay: true }));
  frame(socket, { type: "resumed", replayed: 2 });
  frame(socket, message("1700000000001-0", "E1", "live duplicate"));

  // Another epoch: its ids are new whatever their value; the position moves there.
  socket = reconnect(socket, 1006, result.delays);
  frame(socket, { type: "hello", service, epoch: "E2&x=1", last: "5-0" });
  frame(socket, message("5-0", "E2&x=1", "new epoch", { replay: true }));
  frame(socket, { type: "gap", replayed: 1, reason: "epoch" });
  frame(socket, { type: "resumed", replayed: 0 });

  // No history: messages without ids are all shown.
  frame(socket, { type: "message", service, message: "no id", seq: 9, ts, source: "client" });
  frame(socket, { type: "message", service, message: "no id", seq: 10, ts, source: "client" });

  for (let i = 0; i < 10; i++) {
    socket = reconnect(socket, 4012, result.drainDelays);
  }
  result.lines = lines();
  return result;
}

// What the page did with the grant view's answers: sockets opened and with which subprotocols,
// whether the send form shows, the state, and the retries scheduled.
function grantScenario() {
  const result = { states: [elements.state.textContent], delays: [] };
  while (sockets.length === 0 && timers.length > 0) {
    const timer = timers.shift();
    result.delays.push(timer.delay);
    timer.callback();
    result.states.push(elements.state.textContent);
  }
  result.protocols = sockets.map((socket) => socket.protocols);
  result.sendFormHidden = elements["send-form"].hidden;
  result.timersLeft = timers.length;
  return result;
}

const scenarios = { basic: basicScenario, resume: resumeScenario };
const result = (scenarios[scenario] || grantScenario)();
result.fetches = fetches;
process.stdout.write(JSON.stringify(result));
