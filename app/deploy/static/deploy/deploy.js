// Live deploy messages of one service over ws(s)://<host>/ws/deploy/<service>/.
// Message text is only ever set with textContent, never parsed as HTML.
(function () {
  "use strict";

  var MAX_DELAY_MS = 30000;
  var BASE_DELAY_MS = 500;
  var INVALID_SERVICE = 4400;

  var root = document.getElementById("deploy");
  var service = root.dataset.service;
  var log = document.getElementById("log");
  var state = document.getElementById("state");
  var sendForm = document.getElementById("send-form");
  var messageInput = document.getElementById("message");
  var serviceForm = document.getElementById("service-form");
  var serviceInput = document.getElementById("service-name");

  var scheme = window.location.protocol === "https:" ? "wss:" : "ws:";
  var url = scheme + "//" + window.location.host + "/ws/deploy/" + encodeURIComponent(service) + "/";
  var socket = null;
  var attempts = 0;

  function setState(name, text) {
    state.dataset.state = name;
    state.textContent = text || name;
  }

  function appendLine(className, meta, text) {
    var item = document.createElement("li");
    item.className = className;
    if (meta) {
      var span = document.createElement("span");
      span.className = "meta";
      span.textContent = meta + " ";
      item.appendChild(span);
    }
    item.appendChild(document.createTextNode(text));
    var atBottom = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
    log.appendChild(item);
    if (atBottom) {
      log.scrollTop = log.scrollHeight;
    }
  }

  // Exponential backoff with full jitter: a random delay up to min(cap, base * 2^attempts).
  function reconnectDelay() {
    var ceiling = Math.min(MAX_DELAY_MS, BASE_DELAY_MS * Math.pow(2, attempts));
    return Math.round(Math.random() * ceiling);
  }

  function onMessage(event) {
    var frame;
    try {
      frame = JSON.parse(event.data);
    } catch (err) {
      appendLine("error", "", "unreadable frame from the server");
      return;
    }
    if (frame.type === "message") {
      var time = String(frame.ts || "").replace("T", " ").slice(0, 19);
      appendLine(frame.source === "push" ? "push" : "client", "#" + frame.seq + " " + time, String(frame.message));
    } else if (frame.type === "error") {
      appendLine("error", "error", String(frame.error));
    }
  }

  function onClose(event) {
    socket = null;
    if (event.code === INVALID_SERVICE) {
      setState("closed", "closed: invalid service name");
      return;
    }
    var delay = reconnectDelay();
    attempts += 1;
    setState("reconnecting", "reconnecting in " + Math.ceil(delay / 1000) + " s");
    window.setTimeout(connect, delay);
  }

  function connect() {
    setState("connecting");
    socket = new WebSocket(url);
    socket.onopen = function () {
      attempts = 0;
      setState("connected");
    };
    socket.onmessage = onMessage;
    socket.onclose = onClose;
  }

  sendForm.addEventListener("submit", function (event) {
    event.preventDefault();
    if (!socket || socket.readyState !== WebSocket.OPEN) {
      appendLine("error", "error", "not connected; the message was not sent");
      return;
    }
    socket.send(JSON.stringify({ message: messageInput.value }));
    messageInput.value = "";
  });

  serviceForm.addEventListener("submit", function (event) {
    event.preventDefault();
    window.location.assign("/deploy/" + encodeURIComponent(serviceInput.value) + "/");
  });

  connect();
})();
