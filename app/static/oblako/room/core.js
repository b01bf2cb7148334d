/*
 * Oblako consultation room: pre-call check, waiting room, 1:1 video, chat.
 * Protocol: docs/media-contract.md. Plain JS, no framework; every text comes translated from the
 * page (#oblako-room-config), messages are rendered with textContent only.
 * Two modes: "room" (video + chat, /media/room/...) and "chat" (the consultation page's panel).
 * window.oblakoRoom exposes the state (tests read the peer connections' statistics).
 *
 * The room is several classic scripts in app/static/oblako/room/, loaded in this order
 * (app/templates/oblako/room_scripts.html lists them once):
 *   core.js      config, the state object, trace, the status line, join token and socket
 *   chat.js      the chat: messages, pending and failed sends, read marks
 *   precall.js   the pre-call check and the self-view: preview, microphone level, dragging
 *   presence.js  the room's stages: enter, waiting room, who is there, ended
 *   peers.js     browser-to-browser connections: signalling, ICE restarts, fallback
 *   relay.js     the media server's relay: publish, subscribe, the recording state
 *   controls.js  the buttons, starting the consultation, invitations; starts the room
 * This file makes the one shared object, window.oblakoRoomParts (R below): every part is an
 * IIFE that takes it, defines its functions and registers on R those other parts call. Calls
 * across parts go through R (R.status(...)); calls inside a part stay direct. The constants
 * (R.cfg, R.T, R.E, R.ROOM, R.room) and the DOM helpers ($, show, noop) may be copied into
 * locals. Nothing runs while the parts load: controls.js, the last, starts the room.
 */
(function () {
  "use strict";

  var cfgEl = document.getElementById("oblako-room-config");
  if (!cfgEl || typeof io !== "function") {
    return;
  }
  // The shared object of the room's parts (see above): filled in at the end of this file.
  var R = {};
  var cfg = JSON.parse(cfgEl.textContent);
  var T = cfg.text || {};
  var E = cfg.errors || {};
  var ROOM = cfg.mode === "room";
  var ACK_TIMEOUT_MS = 10000;

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
    stateVersion: 0,
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
    counterparts: {}, // who is on the other side of the call (presence.js)
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
          R.onChatState(data.chat);
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
                  R.endCallForGood();
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

  // Who is in the room, unless this socket already heard a newer list: another media process's
  // older list can arrive after this one's newer (media_server/rooms.py). A new socket starts
  // over (the disconnect handler), so a restarted server's numbers never look old.
  function takeState(data) {
    var version = data.version || 0;
    if (version < room.stateVersion) {
      return false;
    }
    room.stateVersion = version;
    room.participants = data.participants || [];
    return true;
  }

  function bind(socket) {
    socket.on("joined", function (data) {
      trace("joined", data.sid);
      room.sid = data.sid;
      room.userId = data.user_id;
      takeState(data);
      // ICE servers come with the join token (fetched just before this connect): they carry
      // this join's TURN credential, the media server's list does not.
      room.relayVideoKbps = data.relay_video_kbps || 0;
      room.sessionEnded = false;
      status("");
      // The peer connections are kept: media flows browser to browser whatever happens to
      // this socket; one that broke renegotiates through its own ICE watch (onIceState).
      // The server closed this socket's relay connections with the old socket.
      R.closeRelay();
      if (ROOM && room.wantRoom && !room.ended) {
        R.enterRoom();
      }
      R.onRoomState();
      R.resendPending();
    });
    socket.on("chat.history", function (data) {
      ((data && data.messages) || []).forEach(R.addMessage);
      R.markRead();
    });
    socket.on("chat.message", function (message) {
      R.addMessage(message);
      R.markRead();
    });
    socket.on("room.state", function (data) {
      if (!data || !takeState(data)) {
        return;
      }
      trace("room.state", room.participants.map(function (p) {
        return p.sid + ":" + p.state;
      }).join(","));
      R.onRoomState();
    });
    socket.on("room.admitted", function () {
      room.state = "admitted";
      R.stage(T.connecting);
      R.askRelayState();
    });
    socket.on("room.ended", R.onEnded);
    socket.on("consultation.state", function (data) {
      if (!data) {
        return;
      }
      room.status = data.status || room.status;
      R.onChatState(room.role === "guest" ? !!data.guest_chat : !!data.chat);
    });
    socket.on("record.state", function (data) {
      R.setRecording(!!(data && data.recording));
    });
    socket.on("relay.sources", function (data) {
      room.relay.sources = (data && data.sources) || [];
      R.syncRelay();
    });
    socket.on("signal", R.onSignal);
    socket.on("error", function (data) {
      if (data && data.error === "session_ended") {
        room.sessionEnded = true;
      }
      status(E[data && data.error] || E.unknown, "danger");
    });
    socket.on("disconnect", function (reason) {
      trace("socket disconnect", reason);
      room.stateVersion = 0;
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
        status(R.callFlows() ? T.chat_unavailable : T.reconnecting, "warning");
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
      status(E[code] || (R.callFlows() ? T.chat_unavailable : T.reconnecting), "warning");
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
  // The shared object (window.oblakoRoom is set when the room starts: controls.js)
  // ---------------------------------------------------------------------------------------

  Object.assign(R, {
    cfg: cfg,
    T: T,
    E: E,
    ROOM: ROOM,
    ACK_TIMEOUT_MS: ACK_TIMEOUT_MS,
    room: room,
    $: $,
    show: show,
    noop: noop,
    trace: trace,
    randomId: randomId,
    status: status,
    RoomError: RoomError,
    fetchToken: fetchToken,
    connect: connect,
    emit: emit,
  });
  window.oblakoRoomParts = R;
})();
