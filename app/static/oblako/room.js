/*
 * Oblako consultation room: pre-call check, waiting room, 1:1 video, chat.
 * Protocol: docs/media-contract.md. Plain JS, no framework; every text comes translated from the
 * page (#oblako-room-config), messages are rendered with textContent only.
 * Two modes: "room" (video + chat, /media/room/...) and "chat" (the consultation page's panel).
 * window.oblakoRoom exposes the state (tests read the peer connections' statistics).
 */
(function () {
  "use strict";

  var cfgEl = document.getElementById("oblako-room-config");
  if (!cfgEl || typeof io !== "function") {
    return;
  }
  var cfg = JSON.parse(cfgEl.textContent);
  var T = cfg.text || {};
  var E = cfg.errors || {};
  var ROOM = cfg.mode === "room";
  var ICE_GRACE_MS = 5000;
  var ACK_TIMEOUT_MS = 10000;
  var CLOSED_RETRY_MS = 20000; // a message kept while the chat is closed is tried again this often
  var RECORD_STOP_TIMEOUT_MS = 40000;
  // One read mark per this delay at most, for the newest message: every event counts toward
  // the server's flood limit (50 in 5 s), and a busy chat must never get the reader cut off.
  var READ_DELAY_MS = 500;
  // Browser-to-browser gets this long to connect, and this many negotiations in a row; then
  // the call goes through the media server's relay (no TURN, UDP blocked, symmetric NATs).
  var P2P_CONNECT_MS = 12000;
  var P2P_TRIES = 2;

  function $(id) {
    return document.getElementById(id);
  }
  function show(el, on) {
    if (el) {
      el.classList.toggle("hidden", !on);
    }
  }
  function noop() {}

  var room = {
    cfg: cfg,
    socket: null,
    sid: null,
    userId: null,
    role: cfg.role,
    status: cfg.status,
    participants: [],
    state: "present", // present | waiting | admitted (mine, as the server says)
    wantRoom: false, // pressed «join» and has not hung up
    localStream: null,
    peers: {}, // doctor: remote sid -> peer; others: "doctor" -> peer
    lastSeen: cfg.last_seen || 0,
    lastMarked: cfg.last_seen || 0,
    seen: new Set(),
    pending: new Map(), // client_msg_id -> {body, el, sentAt}
    iceServers: [],
    icePolicy: "all", // "relay": every call through TURN (MEDIA_ICE_TRANSPORT_POLICY)
    relayVideoKbps: 0, // the cap on video sent to the relay, from the server (kbit/s)
    ended: false,
    micLevel: 0,
    chatOpen: !!cfg.chat, // may write now, as the server last said (the page, a token, an event)
    sessionEnded: false, // the server closed the socket: the session it was joined with is over
    recording: false,
    // The media server's aiortc relay (docs/media-contract.md "Relay and recording"): used with
    // three or more participants, and while recording (the recorder records what is published).
    relay: { pub: null, pubFailedAt: 0, subs: {}, sources: [] },
    relayFallback: false, // browser-to-browser failed: this call goes through the relay
    p2pFailures: {}, // doctor: remote sid -> negotiations in a row that did not connect
  };
  // What the page decided and why, newest last (support reads it from the console:
  // oblakoRoom.log; the browser tests save it when they fail). Never message contents.
  room.log = [];
  function trace() {
    var line = [Math.round(performance.now())].concat([].slice.call(arguments)).join(" ");
    room.log.push(line);
    if (room.log.length > 300) {
      room.log.shift();
    }
  }
  Object.defineProperty(room, "pc", {
    get: function () {
      var keys = Object.keys(room.peers);
      return keys.length ? room.peers[keys[0]].pc : null;
    },
  });
  room.inboundVideoFrames = function () {
    var pcs = Object.keys(room.peers).map(function (k) {
      return room.peers[k].pc;
    });
    Object.keys(room.relay.subs).forEach(function (k) {
      pcs.push(room.relay.subs[k].pc);
    });
    return Promise.all(
      pcs.map(function (pc) {
        return pc.getStats();
      })
    ).then(function (reports) {
      var frames = 0;
      reports.forEach(function (report) {
        report.forEach(function (s) {
          if (s.type === "inbound-rtp" && (s.kind || s.mediaType) === "video") {
            frames += s.framesDecoded || 0;
          }
        });
      });
      return frames;
    });
  };
  window.oblakoRoom = room;

  function randomId() {
    if (window.crypto && typeof window.crypto.randomUUID === "function") {
      return window.crypto.randomUUID();
    }
    var bytes = new Uint8Array(16);
    window.crypto.getRandomValues(bytes);
    return Array.prototype.map
      .call(bytes, function (b) {
        return ("0" + b.toString(16)).slice(-2);
      })
      .join("");
  }

  // ---------------------------------------------------------------------------------------
  // Status line
  // ---------------------------------------------------------------------------------------

  function status(text, kind) {
    var el = $("room-status");
    if (!el) {
      return;
    }
    if (!text) {
      show(el, false);
      el.textContent = "";
      return;
    }
    trace("status", kind, text);
    el.className = "alert alert-" + (kind || "info");
    el.textContent = text;
  }

  // ---------------------------------------------------------------------------------------
  // Join token and the socket
  // ---------------------------------------------------------------------------------------

  function RoomError(message, fatal) {
    this.message = message;
    this.fatal = !!fatal;
  }

  function fetchToken() {
    return fetch(cfg.token_url, {
      credentials: "same-origin",
      cache: "no-store",
      headers: { Accept: "application/json" },
    }).then(function (response) {
      var type = response.headers.get("Content-Type") || "";
      if (type.indexOf("application/json") === -1) {
        // Sent to the sign-in page: the session is gone.
        throw new RoomError(T.session_expired, true);
      }
      return response.json().then(function (data) {
        if (!response.ok) {
          throw new RoomError(data.message || T.token_failed, response.status < 500);
        }
        if (data.ice_servers) {
          room.iceServers = data.ice_servers; // with this join's TURN credential
          room.icePolicy = data.ice_transport_policy || "all";
        }
        if (data.status) {
          room.status = data.status;
        }
        if (typeof data.chat === "boolean") {
          onChatState(data.chat);
        }
        return data;
      });
    });
  }

  function connect() {
    fetchToken()
      .then(function (first) {
        var fresh = first.token;
        var socket = io(first.url, {
          transports: ["websocket", "polling"],
          tryAllTransports: true,
          reconnectionDelayMax: 5000,
          // Called on every (re)connect: a fresh short-lived token each time.
          auth: function (cb) {
            var use = fresh;
            fresh = null;
            var got = use ? Promise.resolve({ token: use }) : fetchToken();
            got
              .then(function (data) {
                cb({ token: data.token, last_seen: room.lastSeen });
              })
              .catch(function (err) {
                room.fatal = err.fatal;
                if (room.fatal && room.sessionEnded) {
                  endCallForGood();
                }
                status(
                  (room.sessionEnded && E.session_ended) || err.message || T.token_failed,
                  "danger"
                );
                cb({ token: "", last_seen: room.lastSeen });
              });
          },
        });
        room.socket = socket;
        bind(socket);
      })
      .catch(function (err) {
        status(err.message || T.token_failed, "danger");
      });
  }

  function bind(socket) {
    socket.on("joined", function (data) {
      trace("joined", data.sid);
      room.sid = data.sid;
      room.userId = data.user_id;
      room.participants = data.participants || [];
      // ICE servers come with the join token (fetched just before this connect): they carry
      // this join's TURN credential, the media server's list does not.
      room.relayVideoKbps = data.relay_video_kbps || 0;
      room.sessionEnded = false;
      status("");
      // The peer connections are kept: media flows browser to browser whatever happens to
      // this socket; one that broke renegotiates through its own ICE watch (onIceState).
      // The server closed this socket's relay connections with the old socket.
      closeRelay();
      if (ROOM && room.wantRoom && !room.ended) {
        enterRoom();
      }
      onRoomState();
      resendPending();
    });
    socket.on("chat.history", function (data) {
      ((data && data.messages) || []).forEach(addMessage);
      markRead();
    });
    socket.on("chat.message", function (message) {
      addMessage(message);
      markRead();
    });
    socket.on("room.state", function (data) {
      room.participants = (data && data.participants) || [];
      trace("room.state", room.participants.map(function (p) {
        return p.sid + ":" + p.state;
      }).join(","));
      onRoomState();
    });
    socket.on("room.admitted", function () {
      room.state = "admitted";
      stage(T.connecting);
      askRelayState();
    });
    socket.on("room.ended", onEnded);
    socket.on("consultation.state", function (data) {
      if (!data) {
        return;
      }
      room.status = data.status || room.status;
      onChatState(room.role === "guest" ? !!data.guest_chat : !!data.chat);
    });
    socket.on("record.state", function (data) {
      setRecording(!!(data && data.recording));
    });
    socket.on("relay.sources", function (data) {
      room.relay.sources = (data && data.sources) || [];
      syncRelay();
    });
    socket.on("signal", onSignal);
    socket.on("error", function (data) {
      if (data && data.error === "session_ended") {
        room.sessionEnded = true;
      }
      status(E[data && data.error] || E.unknown, "danger");
    });
    socket.on("disconnect", function (reason) {
      trace("socket disconnect", reason);
      if (room.sessionEnded && reason === "io server disconnect") {
        // Signed out, password changed or account switched off: a fresh token decides. Signed
        // out here too: the call ends and the page says so; otherwise it joins again.
        setTimeout(function () {
          socket.connect();
        }, 500);
        return;
      }
      if (!room.ended) {
        // Without the media server the chat waits; a call that still flows goes on.
        status(callFlows() ? T.chat_unavailable : T.reconnecting, "warning");
      }
      if (reason === "io server disconnect") {
        // Refused by the server (a flood kick-out): it will not come back by itself, and the
        // server asks for at least five seconds before trying again.
        setTimeout(function () {
          socket.connect();
        }, 6000);
      }
    });
    socket.on("connect_error", function (err) {
      var code = err && err.message;
      trace("socket connect_error", code);
      if (room.fatal) {
        return; // the status line already says why (signed out, no access)
      }
      if (code === "origin_forbidden" || code === "room_full") {
        status(E[code], "danger");
        return;
      }
      status(E[code] || (callFlows() ? T.chat_unavailable : T.reconnecting), "warning");
      if (!socket.active) {
        // The server refused this token (expired in transit): try again with a fresh one.
        setTimeout(function () {
          socket.connect();
        }, 2000);
      }
    });
  }

  function emit(event, payload, timeoutMs) {
    return new Promise(function (resolve) {
      if (!room.socket || !room.socket.connected) {
        resolve({ ok: false, error: "disconnected" });
        return;
      }
      room.socket.timeout(timeoutMs || ACK_TIMEOUT_MS).emit(event, payload, function (err, ack) {
        resolve(err ? { ok: false, error: "timeout" } : ack || { ok: false, error: "unknown" });
      });
    });
  }

  // ---------------------------------------------------------------------------------------
  // Chat
  // ---------------------------------------------------------------------------------------

  var list = $("chat-messages");
  var form = $("chat-form");
  var input = $("chat-input");
  var chatError = $("chat-error");
  var timeFormat = null;
  try {
    timeFormat = new Intl.DateTimeFormat(cfg.locale || "ru", {
      timeZone: cfg.timezone || undefined,
      day: "numeric",
      month: "short",
      hour: "2-digit",
      minute: "2-digit",
    });
  } catch (e) {
    timeFormat = new Intl.DateTimeFormat(cfg.locale || "ru");
  }

  if (list) {
    Array.prototype.forEach.call(list.querySelectorAll("[data-id]"), function (li) {
      var id = parseInt(li.getAttribute("data-id"), 10);
      if (id) {
        room.seen.add(id);
      }
    });
    list.scrollTop = list.scrollHeight;
  }

  function chatFail(text) {
    if (chatError) {
      chatError.textContent = text || "";
    }
  }

  function messageElement(m, own) {
    var li = document.createElement("li");
    li.className = "chat-message" + (own ? " own" : "");
    var meta = document.createElement("div");
    meta.className = "chat-meta";
    var author = document.createElement("span");
    author.className = "chat-author";
    author.textContent = m.author_name || "";
    var time = document.createElement("time");
    time.textContent = m.created_at ? timeFormat.format(new Date(m.created_at)) : "";
    meta.appendChild(author);
    meta.appendChild(document.createTextNode(" "));
    meta.appendChild(time);
    var body = document.createElement("div");
    body.className = "chat-body";
    body.textContent = m.body || "";
    li.appendChild(meta);
    li.appendChild(body);
    if (m.id) {
      li.setAttribute("data-id", String(m.id));
    }
    if (m.client_msg_id) {
      li.setAttribute("data-client-id", m.client_msg_id);
    }
    return li;
  }

  function append(li) {
    if (!list) {
      return;
    }
    var nearBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 80;
    list.appendChild(li);
    show($("chat-empty"), false);
    if (nearBottom || li.classList.contains("own")) {
      list.scrollTop = list.scrollHeight;
    }
  }

  function confirmPending(clientId, m) {
    var p = room.pending.get(clientId);
    if (!p) {
      return false;
    }
    room.pending.delete(clientId);
    markMessage(p, "sent");
    p.el.setAttribute("data-id", String(m.id));
    var author = p.el.querySelector(".chat-author");
    if (author && m.author_name) {
      author.textContent = m.author_name;
    }
    var time = p.el.querySelector("time");
    if (time && m.created_at) {
      time.textContent = timeFormat.format(new Date(m.created_at));
    }
    return true;
  }

  function addMessage(m) {
    if (!m || typeof m.id !== "number" || room.seen.has(m.id)) {
      return;
    }
    room.seen.add(m.id);
    if (m.id > room.lastSeen) {
      room.lastSeen = m.id;
    }
    if (confirmPending(m.client_msg_id, m)) {
      return;
    }
    var own = room.userId !== null && m.author_id === room.userId;
    append(messageElement(m, own));
  }

  var readTimer = null;

  function markRead() {
    if (room.role === "guest" || readTimer) {
      return; // guests keep no read marks; a mark is already on its way
    }
    readTimer = setTimeout(flushRead, READ_DELAY_MS);
  }

  function flushRead() {
    clearTimeout(readTimer);
    readTimer = null;
    if (document.visibilityState !== "visible" || room.role === "guest") {
      return; // marked when the tab is shown again
    }
    if (room.lastSeen > room.lastMarked && room.socket && room.socket.connected) {
      var upTo = room.lastSeen;
      var before = room.lastMarked;
      room.lastMarked = upTo;
      emit("chat.read", { up_to: upTo }).then(function (ack) {
        if (ack.ok) {
          room.readMarked = ack.up_to; // what the server stored (tests wait for it)
        } else if (room.lastMarked === upTo) {
          room.lastMarked = before; // the next message (or showing the tab) tries again
        }
      });
    }
  }
  document.addEventListener("visibilitychange", flushRead);

  // A message the server has not stored yet: `pending` (on its way, sent again after a
  // reconnect or a timeout) or `failed` (refused: the chat is closed, or for good). A failed
  // one keeps its text and gets a «Send again» button; one refused because the chat was still
  // closed goes by itself once the chat opens (consultation.state, or a token that says so).
  function markMessage(p, state, reason) {
    p.el.classList.toggle("pending", state === "pending");
    p.el.classList.toggle("failed", state === "failed");
    var note = p.el.querySelector(".chat-state");
    if (!note) {
      note = document.createElement("div");
      note.className = "chat-state";
      p.el.appendChild(note);
    }
    while (note.firstChild) {
      note.removeChild(note.firstChild);
    }
    if (state === "sent") {
      note.parentNode.removeChild(note);
      return;
    }
    var text = document.createElement("span");
    text.textContent = state === "pending" ? T.sending : reason || T.unsent;
    note.appendChild(text);
    if (state === "failed") {
      var again = document.createElement("button");
      again.type = "button";
      again.className = "btn btn-link chat-resend";
      again.textContent = T.resend;
      again.addEventListener("click", function () {
        p.held = false;
        markMessage(p, "pending");
        sendPending(p.clientId);
      });
      note.appendChild(again);
    }
  }

  function sendPending(clientId) {
    var p = room.pending.get(clientId);
    if (!p || p.held || !room.socket || !room.socket.connected) {
      return;
    }
    p.sentAt = Date.now();
    emit("chat.send", { client_msg_id: clientId, body: p.body }).then(function (ack) {
      if (room.pending.get(clientId) !== p) {
        return; // confirmed meanwhile (the broadcast came first)
      }
      if (ack.ok) {
        if (ack.message) {
          room.seen.add(ack.message.id);
          if (ack.message.id > room.lastSeen) {
            room.lastSeen = ack.message.id;
          }
          confirmPending(clientId, ack.message);
        }
        chatOpened(); // stored: the chat is open, whatever the page was told before
        chatFail("");
        return;
      }
      if (ack.error === "timeout" || ack.error === "disconnected") {
        return; // resent after the reconnect or by the retry timer
      }
      if (ack.error === "not_admitted" && room.wantRoom) {
        // A guest waiting to be let into the call: sent once the doctor admits them.
        chatFail(E.not_admitted);
        setTimeout(function () {
          sendPending(clientId);
        }, 3000);
        return;
      }
      if (ack.error === "rate_limited" || ack.error === "server_error") {
        chatFail(E[ack.error] || E.unknown);
        setTimeout(function () {
          sendPending(clientId);
        }, 3000);
        return;
      }
      if (ack.error === "chat_closed") {
        // Kept: it goes as soon as the chat opens (or when the patient presses «Send again»).
        p.held = p.closed = true;
        room.chatOpen = false;
        markMessage(p, "failed", T.unsent_closed);
        showChatClosed();
        return;
      }
      // Refused for good: show why, keep the text so the patient can copy it.
      p.held = true;
      markMessage(p, "failed", E[ack.error] || E.unknown);
    });
  }

  function resendPending() {
    room.pending.forEach(function (_p, clientId) {
      sendPending(clientId);
    });
  }
  setInterval(function () {
    var now = Date.now();
    room.pending.forEach(function (p, clientId) {
      if (p.held && p.closed && now - (p.sentAt || 0) > CLOSED_RETRY_MS) {
        // The chat may have opened where this page could not hear it (the doctor started
        // from the consultation's page): the server decides, one quiet try now and then.
        p.held = false;
        sendPending(clientId);
      } else if (!p.held && now - (p.sentAt || 0) > ACK_TIMEOUT_MS) {
        sendPending(clientId);
      }
    });
  }, 5000);

  // The chat opened (the doctor started the consultation, a fresh token says so, or a send was
  // stored): the notice goes, and the messages held back because it was closed are sent.
  function chatOpened() {
    var was = room.chatOpen;
    room.chatOpen = true;
    hideChatClosed();
    if (was) {
      return;
    }
    room.pending.forEach(function (p, clientId) {
      if (p.held && p.closed) {
        p.held = false;
        markMessage(p, "pending");
        sendPending(clientId);
      }
    });
  }

  function onChatState(open) {
    if (open) {
      chatOpened();
    } else {
      room.chatOpen = false;
      showChatClosed();
    }
  }

  function hideChatClosed() {
    show($("chat-closed"), false);
  }

  function showChatClosed() {
    show($("chat-closed"), true);
  }

  if (form && input) {
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var body = input.value.trim();
      if (!body) {
        return;
      }
      if (body.length > 2000) {
        chatFail(E.too_long);
        return;
      }
      chatFail("");
      var clientId = randomId();
      var el = messageElement(
        { body: body, author_name: cfg.name, created_at: new Date().toISOString() },
        true
      );
      el.setAttribute("data-client-id", clientId);
      var p = { body: body, el: el, sentAt: 0, clientId: clientId, held: false };
      markMessage(p, "pending");
      append(el);
      room.pending.set(clientId, p);
      input.value = "";
      sendPending(clientId);
    });
    input.addEventListener("keydown", function (event) {
      if (event.key === "Enter" && !event.shiftKey) {
        event.preventDefault();
        form.requestSubmit ? form.requestSubmit() : form.dispatchEvent(new Event("submit"));
      }
    });
  }

  // ---------------------------------------------------------------------------------------
  // Pre-call check: permission prompt, self-preview, microphone level
  // ---------------------------------------------------------------------------------------

  var precall = $("precall");

  function precallMessage(text, kind) {
    if (!precall) {
      return;
    }
    precall.className = "alert alert-" + (kind || "info");
    precall.textContent = text;
  }

  function startPreview() {
    if (!navigator.mediaDevices || typeof navigator.mediaDevices.getUserMedia !== "function") {
      precallMessage(T.unsupported, "warning");
      return Promise.resolve(null);
    }
    precallMessage(T.checking, "info");
    // An audio-only consultation (room.html data-mode="audio", for a weak connection) asks
    // for the microphone alone.
    var roomEl = $("room");
    var audioOnly = !!roomEl && roomEl.getAttribute("data-mode") === "audio";
    var video = audioOnly ? false : { width: { ideal: 640 }, height: { ideal: 480 } };
    return navigator.mediaDevices
      .getUserMedia({ audio: true, video: video })
      .catch(function (err) {
        // No camera (or no microphone): the call still works with what there is.
        if (!audioOnly && err && (err.name === "NotFoundError" || err.name === "OverconstrainedError")) {
          return navigator.mediaDevices.getUserMedia({ audio: true }).catch(function () {
            return navigator.mediaDevices.getUserMedia({ video: video });
          });
        }
        throw err;
      })
      .then(function (stream) {
        room.localStream = stream;
        var local = $("local-video");
        if (local) {
          local.srcObject = stream;
          local.play().catch(noop);
        }
        startMeter(stream);
        precallMessage((audioOnly && roomEl.getAttribute("data-audio-ok")) || T.devices_ok, "success");
        show($("btn-mute"), stream.getAudioTracks().length > 0);
        show($("btn-camera"), stream.getVideoTracks().length > 0);
        return stream;
      })
      .catch(function (err) {
        var name = err && err.name;
        if (name === "NotAllowedError" || name === "SecurityError" || name === "PermissionDeniedError") {
          precallMessage(T.permission_denied, "danger");
        } else if (name === "NotFoundError" || name === "OverconstrainedError") {
          precallMessage(T.no_device, "warning");
        } else if (name === "NotReadableError" || name === "AbortError") {
          precallMessage(T.device_busy, "warning");
        } else {
          precallMessage(T.unsupported, "warning");
        }
        return null;
      });
  }

  function startMeter(stream) {
    var AC = window.AudioContext || window.webkitAudioContext;
    var bar = $("mic-level");
    if (!AC || !bar || !stream.getAudioTracks().length) {
      return;
    }
    try {
      var ctx = new AC();
      room.audioContext = ctx;
      var analyser = ctx.createAnalyser();
      analyser.fftSize = 512;
      ctx.createMediaStreamSource(stream).connect(analyser);
      var data = new Uint8Array(analyser.fftSize);
      setInterval(function () {
        analyser.getByteTimeDomainData(data);
        var sum = 0;
        for (var i = 0; i < data.length; i++) {
          var v = (data[i] - 128) / 128;
          sum += v * v;
        }
        var level = Math.min(1, Math.sqrt(sum / data.length) * 4);
        room.micLevel = Math.max(level, room.micLevel * 0.8);
        bar.style.width = Math.round(room.micLevel * 100) + "%";
      }, 100);
    } catch (e) {
      // A level meter is a nicety: the call works without it.
    }
  }

  // ---------------------------------------------------------------------------------------
  // The room: enter, the waiting room, admit, leave, end
  // ---------------------------------------------------------------------------------------

  function stage(text) {
    var placeholder = $("remote-placeholder");
    if (placeholder && text) {
      placeholder.textContent = text;
    }
  }

  function enterRoom() {
    emit("room.enter", {}).then(function (ack) {
      if (!ack.ok) {
        if (ack.error !== "timeout" && ack.error !== "disconnected") {
          status(E[ack.error] || E.unknown, "danger");
          room.wantRoom = false;
          callControls(false);
        }
        return;
      }
      if (ack.state) {
        room.state = ack.state;
      }
      onRoomState();
      askRelayState();
    });
  }

  function askRelayState() {
    emit("relay.state", {}).then(function (ack) {
      if (ack.ok) {
        room.relay.sources = ack.sources || [];
        setRecording(!!ack.recording);
      }
    });
  }

  function me() {
    for (var i = 0; i < room.participants.length; i++) {
      if (room.participants[i].sid === room.sid) {
        return room.participants[i];
      }
    }
    return null;
  }

  // Who is on the other side of the call, by account (a guest: by socket), and whether their
  // socket dropped: the page says so on both sides, and again when they are back.
  room.counterparts = {};

  function identity(p) {
    return p.user_id !== null && p.user_id !== undefined ? "u" + p.user_id : "s" + p.sid;
  }

  function presenceText(p, back) {
    var key = (back ? "back_" : "lost_") + (p.role === "doctor" || p.role === "patient" ? p.role : "guest");
    return (T[key] || "").replace("%(name)s", p.name || "");
  }

  function trackPresence() {
    if (!ROOM || !room.wantRoom || room.ended) {
      room.counterparts = {};
      return;
    }
    var now = {};
    room.participants.forEach(function (p) {
      if (p.sid !== room.sid && p.user_id !== room.userId) {
        now[identity(p)] = p;
      }
    });
    Object.keys(room.counterparts).forEach(function (id) {
      var was = room.counterparts[id];
      var p = now[id];
      if (!p) {
        if (!was.lost && was.state === "admitted") {
          was.lost = true; // the socket is gone without a goodbye: a drop
          status(presenceText(was, false), "warning");
        } else if (!was.lost) {
          delete room.counterparts[id];
        }
        return;
      }
      if (was.lost && p.state === "admitted") {
        status(presenceText(p, true), "success");
        clearLater(presenceText(p, true));
      }
      if (p.state !== "admitted" && !was.lost) {
        delete room.counterparts[id]; // hung up, or still waiting
        return;
      }
      if (p.state === "admitted") {
        room.counterparts[id] = { sid: p.sid, role: p.role, name: p.name, state: p.state };
      }
    });
    Object.keys(now).forEach(function (id) {
      if (!room.counterparts[id] && now[id].state === "admitted") {
        var p = now[id];
        room.counterparts[id] = { sid: p.sid, role: p.role, name: p.name, state: p.state };
      }
    });
  }

  function clearLater(text) {
    setTimeout(function () {
      var el = $("room-status");
      if (el && el.textContent === text) {
        status("");
      }
    }, 4000);
  }

  function callFlows() {
    return Object.keys(room.peers).some(function (k) {
      var s = room.peers[k].pc.iceConnectionState;
      return s === "connected" || s === "completed";
    });
  }

  function onRoomState() {
    var mine = me();
    if (mine) {
      room.state = mine.state;
    }
    trackPresence();
    show($("chat-guest-hint"), room.state !== "admitted");
    if (!ROOM) {
      return;
    }
    if (room.role === "doctor") {
      renderWaiting();
      reconcilePeers();
    }
    syncRelay();
    if (room.role === "doctor") {
      return;
    }
    followDoctor();
    if (room.wantRoom) {
      if (room.state === "waiting") {
        stage(T.waiting);
        status(T.waiting, "info");
      } else if (room.state === "admitted") {
        var line = $("room-status");
        if (line && (line.textContent === T.waiting || line.textContent === T.reconnecting ||
            line.textContent === T.chat_unavailable)) {
          status("");
        }
        if (!room.peers.doctor) {
          stage(T.connecting);
        }
      }
    }
  }

  function renderWaiting() {
    var ul = $("waiting-list");
    if (!ul) {
      return;
    }
    while (ul.firstChild) {
      ul.removeChild(ul.firstChild);
    }
    var waiting = room.participants.filter(function (p) {
      return p.state === "waiting" && p.sid !== room.sid;
    });
    if (!waiting.length) {
      var empty = document.createElement("li");
      empty.className = "list-group-item text-muted";
      empty.textContent = T.nobody_waiting;
      ul.appendChild(empty);
      return;
    }
    waiting.forEach(function (p) {
      var li = document.createElement("li");
      li.className = "list-group-item waiting-participant";
      li.setAttribute("data-sid", p.sid);
      var name = document.createElement("span");
      var label = (cfg.role_labels && cfg.role_labels[p.role]) || "";
      name.textContent = p.name + (label ? " (" + label + ")" : "") + " — " + T.is_waiting;
      var button = document.createElement("button");
      button.type = "button";
      button.className = "btn btn-success btn-sm pull-right admit";
      // Letting the patient in starts a consultation not started yet: one action.
      var starts = p.role === "patient" && room.status === "scheduled" && !!cfg.start_url;
      button.textContent = starts ? T.admit_and_start : T.admit;
      button.addEventListener("click", function () {
        button.disabled = true;
        (starts ? startConsultation() : Promise.resolve(true))
          .then(function (started) {
            return started ? emit("room.admit", { sid: p.sid }) : { ok: false, error: "start" };
          })
          .then(function (ack) {
            if (!ack.ok) {
              button.disabled = false;
              if (ack.error !== "start") {
                status(E[ack.error] || E.unknown, "warning");
              }
            }
          });
      });
      li.appendChild(name);
      li.appendChild(button);
      ul.appendChild(li);
    });
  }

  function onEnded() {
    room.ended = true;
    room.wantRoom = false;
    closeAllPeers();
    closeRelay();
    setRecording(false);
    callControls(false);
    show($("btn-join"), false);
    stage(T.ended);
    status(T.ended, "success");
  }

  // The session is over (signed out): nothing of the call may go on, camera included.
  function endCallForGood() {
    room.wantRoom = false;
    closeAllPeers();
    closeRelay();
    setRecording(false);
    if (room.localStream) {
      room.localStream.getTracks().forEach(function (t) {
        t.stop();
      });
    }
    callControls(false);
    show($("btn-join"), false);
    stage(E.session_ended);
  }

  function callControls(inCall) {
    var box = $("room");
    if (box) {
      box.classList.toggle("room-in-call", inCall);
      var layout = box.querySelector(".room-layout");
      if (inCall && layout && window.innerWidth < 992 && layout.scrollIntoView) {
        layout.scrollIntoView({ block: "start" }); // a phone: the call fills the screen
      }
    }
    show($("btn-join"), !inCall && !room.ended);
    show($("btn-hangup"), inCall);
    show($("btn-record"), inCall && room.role === "doctor");
  }

  // ---------------------------------------------------------------------------------------
  // WebRTC: the doctor offers to each admitted participant; a fresh `pc` id per negotiation
  // ---------------------------------------------------------------------------------------

  function signal(payload) {
    if (room.socket && room.socket.connected) {
      room.socket.emit("signal", payload, noop);
    }
  }

  function rtcConfig() {
    return { iceServers: room.iceServers || [], iceTransportPolicy: room.icePolicy || "all" };
  }

  function newPeer(remoteSid, pcId) {
    var pc = new RTCPeerConnection(rtcConfig());
    var peer = { pc: pc, id: pcId, remote: remoteSid, candidates: [], timer: null, video: null };
    pc.onicecandidate = function (event) {
      if (event.candidate) {
        signal({ to: peer.remote, kind: "candidate", pc: pcId, candidate: event.candidate.toJSON() });
      }
    };
    pc.ontrack = function (event) {
      attachRemote(peer, event);
    };
    pc.oniceconnectionstatechange = function () {
      trace("ice", pcId, pc.iceConnectionState);
      onIceState(peer);
    };
    return peer;
  }

  function attachRemote(peer, event) {
    var box = $("remote-videos");
    if (!box) {
      return;
    }
    if (!peer.video) {
      var video = document.createElement("video");
      video.autoplay = true;
      video.playsInline = true;
      video.className = "room-remote-video";
      video.setAttribute("data-sid", peer.remote);
      box.appendChild(video);
      peer.video = video;
    }
    var stream = event.streams && event.streams[0];
    if (!stream) {
      peer.stream = peer.stream || new MediaStream();
      peer.stream.addTrack(event.track);
      stream = peer.stream;
    }
    if (peer.video.srcObject !== stream) {
      peer.video.srcObject = stream;
    }
    peer.video.play().catch(noop);
    show($("remote-placeholder"), false);
    // Once per peer connection (a track event comes per track). A warning already on the line
    // (say, a recording refused while the call was still connecting: media can flow before the
    // track event) stays readable: only «reconnecting» gives way. Cleared only if unchanged.
    if (!peer.announced) {
      peer.announced = true;
      if (warningShown()) {
        return;
      }
      status(T.in_call, "success");
      setTimeout(function () {
        var el = $("room-status");
        if (el && el.textContent === T.in_call) {
          status("");
        }
      }, 3000);
    }
  }

  function warningShown() {
    var el = $("room-status");
    return (
      !!el &&
      !el.classList.contains("hidden") &&
      /alert-(warning|danger)/.test(el.className) &&
      el.textContent !== T.reconnecting
    );
  }

  function closePeer(key) {
    var peer = room.peers[key];
    if (!peer) {
      return;
    }
    trace("close", peer.id);
    delete room.peers[key];
    clearTimeout(peer.timer);
    clearTimeout(peer.connectTimer);
    peer.pc.onicecandidate = peer.pc.ontrack = peer.pc.oniceconnectionstatechange = null;
    peer.pc.close();
    if (peer.video && peer.video.parentNode) {
      peer.video.parentNode.removeChild(peer.video);
    }
    updatePlaceholder();
  }

  function updatePlaceholder() {
    var none = !Object.keys(room.peers).length && !Object.keys(room.relay.subs).length;
    show($("remote-placeholder"), none);
  }

  function closeAllPeers() {
    Object.keys(room.peers).forEach(closePeer);
  }

  function addLocalTracks(pc, offerer) {
    var stream = room.localStream;
    ["audio", "video"].forEach(function (kind) {
      var track = stream && stream.getTracks().filter(function (t) {
        return t.kind === kind;
      })[0];
      if (track) {
        pc.addTrack(track, stream);
      } else if (offerer) {
        pc.addTransceiver(kind, { direction: "recvonly" });
      }
    });
  }

  function call(remoteSid) {
    closePeer(remoteSid);
    var pcId = randomId();
    trace("call", remoteSid, pcId);
    var peer = newPeer(remoteSid, pcId);
    room.participants.forEach(function (p) {
      if (p.sid === remoteSid) {
        peer.userId = p.user_id;
        peer.role = p.role;
        peer.name = p.name;
      }
    });
    room.peers[remoteSid] = peer;
    peer.connectTimer = setTimeout(function () {
      peer.connectTimer = null;
      var now = peer.pc.iceConnectionState;
      if (now !== "connected" && now !== "completed") {
        trace("not connected in time", pcId, now);
        p2pFailed(peer);
      }
    }, P2P_CONNECT_MS);
    addLocalTracks(peer.pc, true);
    peer.pc
      .createOffer()
      .then(function (offer) {
        return peer.pc.setLocalDescription(offer);
      })
      .then(function () {
        signal({ to: remoteSid, kind: "offer", pc: pcId, sdp: peer.pc.localDescription.sdp });
      })
      .catch(function (err) {
        console.warn("offer failed", err);
      });
  }

  function reconcilePeers() {
    if (!room.wantRoom || room.state !== "admitted") {
      return;
    }
    if (relayMode()) {
      return; // three or more: everyone through the relay instead (syncRelay)
    }
    var admitted = {};
    var listed = {};
    room.participants.forEach(function (p) {
      listed[p.sid] = true;
    });
    room.participants.forEach(function (p) {
      if (p.state === "admitted" && p.sid !== room.sid) {
        admitted[p.sid] = true;
        if (!room.peers[p.sid] && !takeOver(p, listed)) {
          call(p.sid);
        }
      }
    });
    Object.keys(room.peers).forEach(function (sid) {
      if (admitted[sid]) {
        return;
      }
      var peer = room.peers[sid];
      var s = peer.pc.iceConnectionState;
      if (!listed[sid] && (s === "connected" || s === "completed")) {
        // Its socket dropped, its media still flows: the call goes on (ICE watches it).
        peer.orphan = true;
        return;
      }
      closePeer(sid);
    });
  }

  // The same person back on a new socket: the connection that kept flowing is theirs again.
  function takeOver(p, listed) {
    if (p.user_id === null || p.user_id === undefined) {
      return false;
    }
    var keys = Object.keys(room.peers);
    for (var i = 0; i < keys.length; i++) {
      var peer = room.peers[keys[i]];
      var flowing = ["connected", "completed"].indexOf(peer.pc.iceConnectionState) !== -1;
      if (!listed[keys[i]] && peer.userId === p.user_id && !flowing) {
        closePeer(keys[i]); // a reloaded page, say: its end of the connection is gone
        return false;
      }
      if (!listed[keys[i]] && peer.userId === p.user_id) {
        delete room.peers[keys[i]];
        peer.remote = p.sid;
        peer.orphan = false;
        room.peers[p.sid] = peer;
        if (peer.video) {
          peer.video.setAttribute("data-sid", p.sid);
        }
        trace("take over", peer.id, keys[i], "->", p.sid);
        return true;
      }
    }
    return false;
  }

  // The patient's side: the doctor came back on a new socket, the connection is the same.
  function followDoctor() {
    var peer = room.peers.doctor;
    if (!peer) {
      return;
    }
    var stillThere = room.participants.some(function (p) {
      return p.sid === peer.remote;
    });
    if (stillThere) {
      return;
    }
    var doctor = room.participants.filter(function (p) {
      return p.role === "doctor" && p.state === "admitted";
    })[0];
    if (doctor) {
      trace("doctor now", doctor.sid);
      peer.remote = doctor.sid;
    }
  }

  // The media path itself says when the other side's network went (long before the media
  // server notices its socket is gone): said once, and again when media flows back.
  function mediaPresence(peer, up) {
    var who = { role: peer.role || (room.role === "doctor" ? "patient" : "doctor"), name: peer.name };
    if (!up) {
      if (!room.mediaLost && room.socket && room.socket.connected && !room.ended) {
        room.mediaLost = who;
        status(presenceText(who, false), "warning");
      } else if (!room.mediaLost) {
        status(T.reconnecting, "warning");
      }
    } else if (room.mediaLost) {
      var back = presenceText(room.mediaLost, true);
      room.mediaLost = null;
      status(back, "success");
      clearLater(back);
    }
  }

  function onIceState(peer) {
    var state = peer.pc.iceConnectionState;
    if (state === "connected" || state === "completed") {
      clearTimeout(peer.timer);
      clearTimeout(peer.connectTimer);
      peer.timer = peer.connectTimer = null;
      room.p2pFailures[peer.remote] = 0;
      peer.wasConnected = true;
      peer.restarted = false; // a later break may restart again
      mediaPresence(peer, true);
      return;
    }
    if (state === "disconnected" || state === "failed") {
      mediaPresence(peer, false);
    }
    if (room.role !== "doctor") {
      if (state === "disconnected" || state === "failed") {
        // The doctor's side renegotiates when its own ICE fails; when only this side lost
        // the connection (the other end closed or lost its state) it must be asked to.
        if (!peer.timer) {
          peer.timer = setTimeout(function () {
            askRestart(peer);
          }, state === "failed" ? 0 : ICE_GRACE_MS);
        }
      }
      return;
    }
    if (state === "failed" && !peer.restarted) {
      iceRestart(peer);
    } else if (state === "disconnected" && !peer.timer && !peer.restarted) {
      peer.timer = setTimeout(function () {
        peer.timer = null;
        var now = peer.pc.iceConnectionState;
        if (now === "disconnected" || now === "failed") {
          iceRestart(peer);
        }
      }, ICE_GRACE_MS);
    }
  }

  // The doctor's side: a negotiation that did not connect (or a connection that broke). One
  // more browser-to-browser try, then the relay for the rest of the call.
  function p2pFailed(peer) {
    if (room.peers[peer.remote] !== peer) {
      return;
    }
    if (peer.orphan) {
      closePeer(peer.remote); // its socket is gone too: a new call when they are back
      return;
    }
    var n = (room.p2pFailures[peer.remote] || 0) + 1;
    room.p2pFailures[peer.remote] = n;
    trace("p2p failed", peer.id, n);
    if (n < P2P_TRIES) {
      renegotiate(peer);
      return;
    }
    room.relayFallback = true;
    signal({ to: peer.remote, kind: "relay", pc: peer.id });
    syncRelay(); // says bye to the direct connection, publishes and subscribes
  }

  function askRestart(peer) {
    peer.timer = null;
    var now = peer.pc.iceConnectionState;
    if (room.peers.doctor !== peer || (now !== "disconnected" && now !== "failed")) {
      return;
    }
    trace("ask restart", peer.id, now);
    signal({ to: peer.remote, kind: "restart", pc: peer.id });
    // Asked again while no new offer replaces this connection (the doctor may be reconnecting).
    peer.timer = setTimeout(function () {
      askRestart(peer);
    }, 2 * ICE_GRACE_MS);
  }

  function renegotiate(peer) {
    if (room.peers[peer.remote] !== peer) {
      return;
    }
    var stillAdmitted = room.participants.some(function (p) {
      return p.sid === peer.remote && p.state === "admitted";
    });
    if (stillAdmitted && room.wantRoom) {
      call(peer.remote);
    } else {
      closePeer(peer.remote);
    }
  }

  // The patient's side: the doctor restarts ICE on the same connection (same `pc`). Answered
  // in place: the tracks, the video element and whatever still flows stay as they are.
  function answerRestart(peer, data) {
    trace("restart offer", data.pc);
    answerOffer(peer, data).catch(function (err) {
      console.warn("restart answer failed", err);
    });
  }

  // Answer the doctor's offer on `peer.pc`; `prepare` runs once the offer is set, before the
  // answer is made (a new connection adds its tracks and the candidates that came early).
  function answerOffer(peer, data, prepare) {
    return peer.pc
      .setRemoteDescription({ type: "offer", sdp: data.sdp })
      .then(function () {
        if (prepare) {
          prepare();
        }
        return peer.pc.createAnswer();
      })
      .then(function (answer) {
        return peer.pc.setLocalDescription(answer);
      })
      .then(function () {
        signal({ to: data.from, kind: "answer", pc: data.pc, sdp: peer.pc.localDescription.sdp });
      });
  }

  // The doctor's side: a connection that was up and broke gets an ICE restart on the same
  // RTCPeerConnection first (a network back after a few seconds resumes the very same call);
  // one that never connected, was closed, or does not come back in time goes the usual way
  // (a new connection, then the relay).
  function iceRestart(peer) {
    if (room.peers[peer.remote] !== peer) {
      return;
    }
    if (!peer.wasConnected || peer.restarted || peer.orphan || peer.pc.signalingState === "closed") {
      p2pFailed(peer);
      return;
    }
    peer.restarted = true;
    trace("ice restart", peer.id);
    clearTimeout(peer.connectTimer);
    peer.connectTimer = setTimeout(function () {
      peer.connectTimer = null;
      var now = peer.pc.iceConnectionState;
      if (now !== "connected" && now !== "completed") {
        p2pFailed(peer);
      }
    }, P2P_CONNECT_MS);
    peer.pc
      .createOffer({ iceRestart: true })
      .then(function (offer) {
        return peer.pc.setLocalDescription(offer);
      })
      .then(function () {
        signal({ to: peer.remote, kind: "offer", pc: peer.id, sdp: peer.pc.localDescription.sdp });
      })
      .catch(function (err) {
        console.warn("ice restart failed", err);
        p2pFailed(peer);
      });
  }

  function flushCandidates(peer) {
    var queued = peer.candidates;
    peer.candidates = [];
    queued.forEach(function (c) {
      peer.pc.addIceCandidate(c).catch(noop);
    });
  }

  function onSignal(data) {
    if (!data || typeof data !== "object" || typeof data.pc !== "string") {
      return;
    }
    if (data.kind !== "candidate") {
      trace("signal", data.kind, data.pc);
    }
    var key = room.role === "doctor" ? data.from : "doctor";
    var peer = room.peers[key];
    if (data.kind === "offer") {
      if (room.role === "doctor" || typeof data.sdp !== "string" || !room.wantRoom) {
        return;
      }
      if (peer && peer.id === data.pc) {
        if (peer.pc.signalingState !== "closed") {
          answerRestart(peer, data);
        } else {
          // This end of it is gone: the doctor's side makes a new connection.
          signal({ to: data.from, kind: "restart", pc: data.pc });
        }
        return;
      }
      // A new negotiation (new `pc`): replace the previous connection.
      closePeer("doctor");
      peer = newPeer(data.from, data.pc);
      room.peers.doctor = peer;
      answerOffer(peer, data, function () {
        addLocalTracks(peer.pc, false);
        flushCandidates(peer);
      }).catch(function (err) {
        console.warn("answer failed", err);
      });
    } else if (data.kind === "answer") {
      if (!peer || peer.id !== data.pc || typeof data.sdp !== "string") {
        return;
      }
      peer.pc
        .setRemoteDescription({ type: "answer", sdp: data.sdp })
        .then(function () {
          flushCandidates(peer);
        })
        .catch(function (err) {
          console.warn("answer rejected", err);
        });
    } else if (data.kind === "candidate") {
      if (!peer || peer.id !== data.pc || !data.candidate) {
        return;
      }
      if (peer.pc.remoteDescription) {
        peer.pc.addIceCandidate(data.candidate).catch(noop);
      } else {
        peer.candidates.push(data.candidate);
      }
    } else if (data.kind === "relay") {
      // The doctor's side gave up on browser-to-browser: both sides go through the relay.
      if (room.role !== "doctor" && room.wantRoom) {
        room.relayFallback = true;
        closePeer("doctor");
        syncRelay();
      }
    } else if (data.kind === "restart") {
      // The other side lost this connection: restart its ICE (or a new one), unless replaced.
      if (room.role === "doctor" && peer && peer.id === data.pc) {
        iceRestart(peer);
      }
    } else if (data.kind === "bye") {
      if (peer && peer.id === data.pc) {
        closePeer(key);
      }
    }
  }

  // ---------------------------------------------------------------------------------------
  // The relay: publish while recording or with 3+ participants; subscribe with 3+
  // ---------------------------------------------------------------------------------------

  // People admitted, not sockets: after a media process dies, its sockets stay listed until
  // its heartbeat expires while their owners are back through another process. Counting those
  // twice would move a call that still flows browser-to-browser onto the relay.
  function admittedCount() {
    var people = {};
    room.participants.forEach(function (p) {
      if (p.state === "admitted") {
        people[identity(p)] = true;
      }
    });
    return Object.keys(people).length;
  }

  function relayMode() {
    return admittedCount() >= 3 || (room.relayFallback && admittedCount() >= 2);
  }

  function gathered(pc) {
    // aiortc does not trickle: the offer goes once ICE gathering is complete.
    return new Promise(function (resolve) {
      if (pc.iceGatheringState === "complete") {
        resolve();
        return;
      }
      var done = function () {
        if (pc.iceGatheringState === "complete") {
          pc.removeEventListener("icegatheringstatechange", done);
          resolve();
        }
      };
      pc.addEventListener("icegatheringstatechange", done);
      setTimeout(resolve, 5000);
    });
  }

  function relayNegotiate(pc, event, payload) {
    return pc
      .createOffer()
      .then(function (offer) {
        return pc.setLocalDescription(offer);
      })
      .then(function () {
        return gathered(pc);
      })
      .then(function () {
        payload.sdp = pc.localDescription.sdp;
        return emit(event, payload);
      })
      .then(function (ack) {
        if (!ack.ok || typeof ack.sdp !== "string") {
          throw new RoomError(E[ack.error] || E.unknown);
        }
        return pc.setRemoteDescription({ type: "answer", sdp: ack.sdp });
      });
  }

  function publish() {
    var stream = room.localStream;
    if (!stream || !stream.getTracks().length) {
      return; // nothing to send: the others still hear and see each other
    }
    var pc = new RTCPeerConnection(rtcConfig());
    room.relay.pub = pc;
    stream.getTracks().forEach(function (track) {
      var init = { direction: "sendonly", streams: [stream] };
      if (track.kind === "video" && room.relayVideoKbps) {
        // The relay forwards this video as it is, to everybody and into a recording.
        init.sendEncodings = [{ maxBitrate: room.relayVideoKbps * 1000 }];
      }
      pc.addTransceiver(track, init);
    });
    pc.oniceconnectionstatechange = function () {
      if (pc.iceConnectionState === "failed" && room.relay.pub === pc) {
        dropPublish();
      }
    };
    relayNegotiate(pc, "relay.publish", {}).catch(function (err) {
      if (room.relay.pub === pc) {
        dropPublish();
        status(err.message || E.unknown, "warning");
      }
    });
  }

  function dropPublish() {
    var pc = room.relay.pub;
    room.relay.pub = null;
    room.relay.pubFailedAt = Date.now();
    if (pc) {
      pc.close();
    }
    setTimeout(syncRelay, 3000); // a fresh offer: aiortc has no ICE restart
  }

  function subscribe(source) {
    var pc = new RTCPeerConnection(rtcConfig());
    var sub = { pc: pc, remote: source, video: null, id: "relay:" + source };
    room.relay.subs[source] = sub;
    pc.addTransceiver("audio", { direction: "recvonly" });
    pc.addTransceiver("video", { direction: "recvonly" });
    pc.ontrack = function (event) {
      attachRemote(sub, event);
    };
    pc.oniceconnectionstatechange = function () {
      if (pc.iceConnectionState === "failed" && room.relay.subs[source] === sub) {
        closeSub(source);
        setTimeout(syncRelay, 3000);
      }
    };
    relayNegotiate(pc, "relay.subscribe", { source: source }).catch(function () {
      if (room.relay.subs[source] === sub) {
        closeSub(source);
      }
    });
  }

  function closeSub(source) {
    var sub = room.relay.subs[source];
    if (!sub) {
      return;
    }
    delete room.relay.subs[source];
    sub.pc.ontrack = sub.pc.oniceconnectionstatechange = null;
    sub.pc.close();
    if (sub.video && sub.video.parentNode) {
      sub.video.parentNode.removeChild(sub.video);
    }
    updatePlaceholder();
  }

  function closeRelay() {
    if (room.relay.pub) {
      room.relay.pub.oniceconnectionstatechange = null;
      room.relay.pub.close();
      room.relay.pub = null;
    }
    Object.keys(room.relay.subs).forEach(closeSub);
  }

  function syncRelay() {
    if (!ROOM) {
      return;
    }
    var inCall = room.wantRoom && room.state === "admitted" && !room.ended;
    var many = inCall && relayMode();
    var wantPublish = inCall && (room.recording || many);
    if (wantPublish && !room.relay.pub && Date.now() - room.relay.pubFailedAt > 2500) {
      publish();
    } else if (!wantPublish && room.relay.pub) {
      emit("relay.unpublish", {});
      room.relay.pub.close();
      room.relay.pub = null;
    }
    if (many && Object.keys(room.peers).length) {
      // Browser-to-browser connections give way to the relay (the doctor's side sends bye).
      Object.keys(room.peers).forEach(function (key) {
        var peer = room.peers[key];
        if (room.role === "doctor") {
          signal({ to: peer.remote, kind: "bye", pc: peer.id });
        }
        closePeer(key);
      });
    }
    var listed = {};
    if (many) {
      room.relay.sources.forEach(function (src) {
        if (src.sid !== room.sid && (src.audio || src.video)) {
          listed[src.sid] = true;
          if (!room.relay.subs[src.sid]) {
            subscribe(src.sid);
          }
        }
      });
    }
    Object.keys(room.relay.subs).forEach(function (sid) {
      if (!listed[sid]) {
        closeSub(sid);
      }
    });
  }

  function setRecording(on) {
    if (on !== room.recording) {
      // A refusal on the line («consent needed…») no longer holds once the state changed.
      var line = $("room-status");
      if (line && room.refusal && line.textContent === room.refusal) {
        status("");
      }
      room.refusal = null;
    }
    room.recording = on;
    show($("recording-badge"), on);
    var button = $("btn-record");
    if (button) {
      button.querySelector("span").textContent = on ? T.record_stop : T.record_start;
      button.classList.toggle("btn-danger", on);
    }
    syncRelay();
  }

  // ---------------------------------------------------------------------------------------
  // Buttons
  // ---------------------------------------------------------------------------------------

  function on(id, handler) {
    var el = $(id);
    if (el) {
      el.addEventListener("click", handler);
    }
  }

  function setToggle(id, off, offText, onText) {
    var el = $(id);
    if (!el) {
      return;
    }
    el.setAttribute("aria-pressed", off ? "true" : "false");
    el.classList.toggle("active", off);
    el.querySelector("span").textContent = off ? onText : offText;
  }

  on("btn-join", function () {
    if (room.audioContext && room.audioContext.state === "suspended") {
      room.audioContext.resume();
    }
    room.wantRoom = true;
    callControls(true);
    if (room.role !== "doctor") {
      stage(T.waiting);
    }
    if (room.socket && room.socket.connected) {
      enterRoom();
    }
  });

  on("btn-hangup", function () {
    room.wantRoom = false;
    room.relayFallback = false; // the next call tries browser-to-browser again
    room.p2pFailures = {};
    Object.keys(room.peers).forEach(function (key) {
      var peer = room.peers[key];
      signal({ to: peer.remote, kind: "bye", pc: peer.id });
    });
    closeAllPeers();
    if (room.relay.pub) {
      emit("relay.unpublish", {});
    }
    closeRelay();
    emit("room.leave", {});
    callControls(false);
    stage(T.left);
    status(T.left, "info");
  });

  on("btn-mute", function () {
    var tracks = room.localStream ? room.localStream.getAudioTracks() : [];
    var muted = tracks.length && tracks[0].enabled;
    tracks.forEach(function (t) {
      t.enabled = !muted;
    });
    setToggle("btn-mute", !!muted, T.mute, T.unmute);
  });

  on("btn-camera", function () {
    var tracks = room.localStream ? room.localStream.getVideoTracks() : [];
    var off = tracks.length && tracks[0].enabled;
    tracks.forEach(function (t) {
      t.enabled = !off;
    });
    setToggle("btn-camera", !!off, T.camera_off, T.camera_on);
  });

  // ConclusionView.start answers with a redirect to the consultation's page (its flash is
  // shown there): the outcome is read back from the token endpoint's status. Resolves true
  // once the consultation is in progress (already, or now).
  function startConsultation() {
    if (room.status === "in_progress" || !cfg.start_url) {
      return Promise.resolve(room.status === "in_progress");
    }
    var button = $("btn-start");
    if (button) {
      button.disabled = true;
    }
    var body = new FormData();
    body.append("csrf_token", cfg.csrf_token);
    return fetch(cfg.start_url, { method: "POST", body: body, credentials: "same-origin" })
      .then(fetchToken)
      .then(function (data) {
        return data.status === "in_progress";
      })
      .catch(function () {
        return false;
      })
      .then(function (started) {
        if (started) {
          show(button, false);
          show($("btn-end"), true);
          emit("consultation.refresh", {}); // every page in the room: the chat is open
        } else {
          if (button) {
            button.disabled = false;
          }
          status(T.start_failed, "danger");
        }
        return started;
      });
  }

  on("btn-start", function () {
    startConsultation().then(function (started) {
      if (started) {
        status(T.started, "success");
      }
    });
  });

  on("btn-record", function () {
    var button = $("btn-record");
    button.disabled = true;
    // Stopping answers once the file is saved: the recorder may still be encoding what it
    // queued (up to its 15 s drain), so the answer gets longer than the usual ack timeout.
    var stopping = room.recording;
    var timeoutMs = stopping ? RECORD_STOP_TIMEOUT_MS : 0;
    emit(stopping ? "record.stop" : "record.start", {}, timeoutMs).then(function (ack) {
      trace(stopping ? "record.stop" : "record.start", ack.ok, ack.error);
      button.disabled = false;
      if (!ack.ok) {
        room.refusal = E[ack.error] || E.unknown;
        status(room.refusal, "warning");
      }
    });
  });

  on("btn-end", function () {
    if (!window.confirm(T.end_confirm)) {
      return;
    }
    emit("room.end", {}).then(function () {
      room.ended = true;
      closeAllPeers();
      if (cfg.conclusion_url) {
        window.location.assign(cfg.conclusion_url);
      }
    });
  });

  // A form posted in place (reloading the page would drop the call): its JSON answer, or a
  // RoomError with the server's message (or `fallback`).
  function postForm(form, fallback) {
    return fetch(form.action, {
      method: "POST",
      body: new FormData(form),
      credentials: "same-origin",
      headers: { Accept: "application/json" },
    }).then(function (response) {
      return response.json().then(function (data) {
        if (!response.ok) {
          throw new RoomError(data.message || fallback);
        }
        return data;
      });
    });
  }

  var inviteForm = $("invite-form");
  if (inviteForm) {
    inviteForm.addEventListener("submit", function (event) {
      event.preventDefault();
      postForm(inviteForm, T.invite_failed)
        .then(function (data) {
          $("invite-link").value = data.link;
          show($("invite-result"), true);
          inviteForm.reset();
          listInvite(data);
        })
        .catch(function (err) {
          status(err.message || T.invite_failed, "danger");
        });
    });
    var inviteList = $("invite-list");
    // The new invitation in the list at once, with its «Revoke» (the same form as rendered).
    var listInvite = function (data) {
      if (!inviteList || !data.revoke_url) {
        return;
      }
      var li = document.createElement("li");
      var text = document.createElement("span");
      text.textContent = data.name + " — " + data.role + ", " + (data.state || "");
      var revoke = document.createElement("form");
      revoke.method = "post";
      revoke.action = data.revoke_url;
      revoke.className = "inline invite-revoke";
      var token = document.createElement("input");
      token.type = "hidden";
      token.name = "csrf_token";
      token.value = cfg.csrf_token;
      var button = document.createElement("button");
      button.type = "submit";
      button.className = "btn btn-link";
      button.textContent = T.revoke;
      revoke.appendChild(token);
      revoke.appendChild(button);
      li.appendChild(text);
      li.appendChild(document.createTextNode(" "));
      li.appendChild(revoke);
      inviteList.appendChild(li);
    };
    if (inviteList) {
      inviteList.addEventListener("submit", function (event) {
        var target = event.target;
        if (!target.classList || !target.classList.contains("invite-revoke")) {
          return;
        }
        event.preventDefault(); // in place: reloading the page would drop the call
        postForm(target, E.unknown)
          .then(function (data) {
            var li = target.parentNode;
            if (li && li.parentNode) {
              li.parentNode.removeChild(li);
            }
            status(data.message, "success");
          })
          .catch(function (err) {
            status(err.message || E.unknown, "danger");
          });
      });
    }
    on("invite-copy", function () {
      var field = $("invite-link");
      field.select();
      var done = function () {
        status(T.copied, "success");
      };
      if (navigator.clipboard && navigator.clipboard.writeText) {
        navigator.clipboard.writeText(field.value).then(done, noop);
      } else {
        document.execCommand("copy");
        done();
      }
    });
  }

  // The self-view moves where the person drags it (mouse, finger or pen), inside the video.
  function draggable(el, area) {
    if (!el || !area || !window.PointerEvent) {
      return;
    }
    var start = null;
    el.addEventListener("pointerdown", function (event) {
      var box = el.getBoundingClientRect();
      start = { x: event.clientX - box.left, y: event.clientY - box.top };
      el.classList.add("dragging");
      el.setPointerCapture(event.pointerId);
      event.preventDefault();
    });
    el.addEventListener("pointermove", function (event) {
      if (!start) {
        return;
      }
      var frame = area.getBoundingClientRect();
      var box = el.getBoundingClientRect();
      var left = Math.min(Math.max(event.clientX - frame.left - start.x, 0), frame.width - box.width);
      var top = Math.min(Math.max(event.clientY - frame.top - start.y, 0), frame.height - box.height);
      el.style.left = Math.round(left) + "px";
      el.style.top = Math.round(top) + "px";
      el.style.right = "auto";
      el.style.bottom = "auto";
    });
    var stop = function () {
      start = null;
      el.classList.remove("dragging");
    };
    el.addEventListener("pointerup", stop);
    el.addEventListener("pointercancel", stop);
  }
  draggable($("room-self"), $("room-videos"));

  // ---------------------------------------------------------------------------------------
  // Start
  // ---------------------------------------------------------------------------------------

  if (ROOM && $("local-video")) {
    startPreview();
  } else {
    show(precall, false);
  }
  connect();
})();
