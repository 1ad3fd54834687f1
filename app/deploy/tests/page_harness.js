// Runs deploy/static/deploy/deploy.js against a fake DOM, WebSocket and timer, then prints
// what it did as JSON. Usage: node page_harness.js SCRIPT PROTOCOL HOST SERVICE [SCENARIO]
// SCENARIO: "basic" (the default: frames, sending, backoff, 4400) or "resume" (positions,
// duplicates, resumed/gap lines, the 4012 drain).
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

const sockets = [];
class FakeWebSocket {
  constructor(url) {
    this.url = url;
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

const result = scenario === "resume" ? resumeScenario() : basicScenario();
process.stdout.write(JSON.stringify(result));
