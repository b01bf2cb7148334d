/*
 * Oblako consultation room, its stages: enter, the waiting room and admitting, who is on the
 * other side (and who dropped), leave, end.
 * Part of the room: core.js says how the parts fit together.
 */
(function (R) {
  "use strict";

  if (!R) {
    return; // no room on this page (core.js found no config or no socket.io)
  }
  var cfg = R.cfg;
  var T = R.T;
  var E = R.E;
  var ROOM = R.ROOM;
  var room = R.room;
  var $ = R.$;
  var show = R.show;

  function stage(text) {
    var placeholder = $("remote-placeholder");
    if (placeholder && text) {
      placeholder.textContent = text;
    }
  }

  function enterRoom() {
    R.emit("room.enter", {}).then(function (ack) {
      if (!ack.ok) {
        if (ack.error !== "timeout" && ack.error !== "disconnected") {
          R.status(E[ack.error] || E.unknown, "danger");
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
    R.emit("relay.state", {}).then(function (ack) {
      if (ack.ok) {
        room.relay.sources = ack.sources || [];
        R.setRecording(!!ack.recording);
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
  // socket dropped: the page says so on both sides, and again when they are back. Kept in
  // room.counterparts (an empty object in core.js's state).

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
          R.status(presenceText(was, false), "warning");
        } else if (!was.lost) {
          delete room.counterparts[id];
        }
        return;
      }
      if (was.lost && p.state === "admitted") {
        R.status(presenceText(p, true), "success");
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
        R.status("");
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
      R.reconcilePeers();
    }
    R.syncRelay();
    if (room.role === "doctor") {
      return;
    }
    R.followDoctor();
    if (room.wantRoom) {
      if (room.state === "waiting") {
        stage(T.waiting);
        R.status(T.waiting, "info");
      } else if (room.state === "admitted") {
        var line = $("room-status");
        if (line && (line.textContent === T.waiting || line.textContent === T.reconnecting ||
            line.textContent === T.chat_unavailable)) {
          R.status("");
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
        (starts ? R.startConsultation() : Promise.resolve(true))
          .then(function (started) {
            return started ? R.emit("room.admit", { sid: p.sid }) : { ok: false, error: "start" };
          })
          .then(function (ack) {
            if (!ack.ok) {
              button.disabled = false;
              if (ack.error !== "start") {
                R.status(E[ack.error] || E.unknown, "warning");
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
    R.closeAllPeers();
    R.closeRelay();
    R.setRecording(false);
    callControls(false);
    show($("btn-join"), false);
    stage(T.ended);
    R.status(T.ended, "success");
  }

  // The session is over (signed out): nothing of the call may go on, camera included.
  function endCallForGood() {
    room.wantRoom = false;
    R.closeAllPeers();
    R.closeRelay();
    R.setRecording(false);
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

  R.askRelayState = askRelayState;
  R.callControls = callControls;
  R.callFlows = callFlows;
  R.clearLater = clearLater;
  R.endCallForGood = endCallForGood;
  R.enterRoom = enterRoom;
  R.identity = identity;
  R.onEnded = onEnded;
  R.onRoomState = onRoomState;
  R.presenceText = presenceText;
  R.stage = stage;
})(window.oblakoRoomParts);
