// Live deploy messages of one service over ws(s)://<host>/ws/deploy/<service>/.
// Message text is only ever set with textContent, never parsed as HTML.
// With the server's history on, the page keeps its position (the last message id and its epoch)
// and reconnects with ?after=<id>&epoch=<epoch> to get what it missed (docs/architecture.md).
// Before each connection it asks the grant view for a grant as the signed-in user and offers it as
// the subprotocol "grant.<token>" (deploy.grants); without one the page asks the visitor to sign in.
(function () {
  "use strict";

  var MAX_DELAY_MS = 30000;
  var BASE_DELAY_MS = 500;
  var INVALID_SERVICE = 4400;
  var DRAINING = 4012;
  var DRAIN_DELAY_MS = 1000;

  var root = document.getElementById("deploy");
  var service = root.dataset.service;
  var grantUrl = root.dataset.grantUrl;
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
  // {id: "<ms>-<n>", epoch: "..."}: the newest message seen, null until the server said hello.
  var position = null;

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

  // Compares two unsigned decimal integers given as strings (they may exceed 2^53).
  function compareDecimals(a, b) {
    a = a.replace(/^0+(?=[0-9])/, "");
    b = b.replace(/^0+(?=[0-9])/, "");
    if (a.length !== b.length) {
      return a.length < b.length ? -1 : 1;
    }
    return a < b ? -1 : a > b ? 1 : 0;
  }

  // Stream ids "<ms>-<n>" compare as pairs of integers; -1, 0, 1 like a sort comparator.
  function compareIds(a, b) {
    var x = a.split("-");
    var y = b.split("-");
    return compareDecimals(x[0], y[0]) || compareDecimals(x[1] || "0", y[1] || "0");
  }

  // Whether a message frame is new to the page; moves the position to it when it is.
  function isNew(frame) {
    if (typeof frame.id !== "string") {
      return true; // the server keeps no history
    }
    if (position && position.epoch === frame.epoch && compareIds(frame.id, position.id) <= 0) {
      return false;
    }
    position = { id: frame.id, epoch: frame.epoch };
    return true;
  }

  function socketUrl() {
    if (!position) {
      return url;
    }
    return url + "?after=" + encodeURIComponent(position.id) + "&epoch=" + encodeURIComponent(position.epoch);
  }

  function onMessage(event) {
    var frame;
    try {
      frame = JSON.parse(event.data);
    } catch (err) {
      appendLine("error", "", "unreadable frame from the server");
      return;
    }
    if (frame.type === "hello") {
      if (!position) {
        position = { id: String(frame.last), epoch: String(frame.epoch) };
      }
    } else if (frame.type === "message") {
      if (!isNew(frame)) {
        return;
      }
      var time = String(frame.ts || "").replace("T", " ").slice(0, 19);
      appendLine(frame.source === "push" ? "push" : "client", "#" + frame.seq + " " + time, String(frame.message));
    } else if (frame.type === "resumed") {
      if (frame.replayed > 0) {
        var count = Number(frame.replayed);
        appendLine("recovered", "", "recovered " + count + (count === 1 ? " message" : " messages"));
      }
    } else if (frame.type === "gap") {
      appendLine("gap", "", "some messages were missed");
    } else if (frame.type === "error") {
      appendLine("error", "error", String(frame.error));
    }
  }

  function retry() {
    var delay = reconnectDelay();
    attempts += 1;
    setState("reconnecting", "reconnecting in " + Math.ceil(delay / 1000) + " s");
    window.setTimeout(connect, delay);
  }

  function onClose(event) {
    socket = null;
    if (event.code === INVALID_SERVICE) {
      setState("closed", "closed: invalid service name");
      return;
    }
    if (event.code === DRAINING) {
      // The server is going away: reconnect now (to another host), spread over a second.
      var delay = Math.round(Math.random() * DRAIN_DELAY_MS);
      setState("reconnecting", "reconnecting in " + Math.ceil(delay / 1000) + " s");
      window.setTimeout(connect, delay);
      return;
    }
    retry(); // 4403 (no valid grant) included: it expired meanwhile, the next one is asked for
  }

  // {grant: "<token>" or null (open to anyone), write: bool} from the grant view.
  function open(grant) {
    sendForm.hidden = !grant.write;
    socket = new WebSocket(socketUrl(), grant.grant ? ["deploy", "grant." + grant.grant] : []);
    socket.onopen = function () {
      attempts = 0;
      setState("connected");
    };
    socket.onmessage = onMessage;
    socket.onclose = onClose;
  }

  function connect() {
    setState("connecting");
    window
      .fetch(grantUrl, { credentials: "same-origin", cache: "no-store", headers: { Accept: "application/json" } })
      .then(function (response) {
        if (response.status === 401 || response.status === 403) {
          return response.json().then(function (body) {
            setState("closed", "closed: " + String(body.error || "not allowed to read this service"));
          });
        }
        if (!response.ok) {
          throw new Error("grant: HTTP " + response.status);
        }
        return response.json().then(open);
      })
      .catch(retry);
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
