// Runs deploy/static/deploy/deploy.js against a fake DOM, WebSocket and timer, then prints
// what it did as JSON. Usage: node page_harness.js SCRIPT PROTOCOL HOST SERVICE
"use strict";

const fs = require("fs");
const vm = require("vm");

const [scriptPath, protocol, host, service] = process.argv.slice(2);

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

process.stdout.write(JSON.stringify(result));
