/*
 * Oblako consultation room, the controls: the call's buttons, starting the consultation, the
 * doctor's invitations. Loaded last: every part is defined by now, so this one starts the room.
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
  var room = R.room;
  var $ = R.$;
  var show = R.show;
  var noop = R.noop;
  var RECORD_STOP_TIMEOUT_MS = 40000;

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
      .then(R.fetchToken)
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
          R.emit("consultation.refresh", {}); // every page in the room: the chat is open
        } else {
          if (button) {
            button.disabled = false;
          }
          R.status(T.start_failed, "danger");
        }
        return started;
      });
  }

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
          throw new R.RoomError(data.message || fallback);
        }
        return data;
      });
    });
  }

  // The call's buttons: join, hang up, mute, camera, start, record, end.
  function bindButtons() {
    on("btn-join", function () {
      if (room.audioContext && room.audioContext.state === "suspended") {
        room.audioContext.resume();
      }
      room.wantRoom = true;
      R.callControls(true);
      if (room.role !== "doctor") {
        R.stage(T.waiting);
      }
      if (room.socket && room.socket.connected) {
        R.enterRoom();
      }
    });

    on("btn-hangup", function () {
      room.wantRoom = false;
      room.relayFallback = false; // the next call tries browser-to-browser again
      room.p2pFailures = {};
      Object.keys(room.peers).forEach(function (key) {
        var peer = room.peers[key];
        R.signal({ to: peer.remote, kind: "bye", pc: peer.id });
      });
      R.closeAllPeers();
      if (room.relay.pub) {
        R.emit("relay.unpublish", {});
      }
      R.closeRelay();
      R.emit("room.leave", {});
      R.callControls(false);
      R.stage(T.left);
      R.status(T.left, "info");
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

    on("btn-start", function () {
      startConsultation().then(function (started) {
        if (started) {
          R.status(T.started, "success");
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
      R.emit(stopping ? "record.stop" : "record.start", {}, timeoutMs).then(function (ack) {
        R.trace(stopping ? "record.stop" : "record.start", ack.ok, ack.error);
        button.disabled = false;
        if (!ack.ok) {
          room.refusal = E[ack.error] || E.unknown;
          R.status(room.refusal, "warning");
        }
      });
    });

    on("btn-end", function () {
      if (!window.confirm(T.end_confirm)) {
        return;
      }
      R.emit("room.end", {}).then(function () {
        room.ended = true;
        R.closeAllPeers();
        if (cfg.conclusion_url) {
          window.location.assign(cfg.conclusion_url);
        }
      });
    });
  }

  // The doctor's invitations: made, listed, revoked and copied in place.
  function bindInvites() {
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
            R.status(err.message || T.invite_failed, "danger");
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
              R.status(data.message, "success");
            })
            .catch(function (err) {
              R.status(err.message || E.unknown, "danger");
            });
        });
      }
      on("invite-copy", function () {
        var field = $("invite-link");
        field.select();
        var done = function () {
          R.status(T.copied, "success");
        };
        if (navigator.clipboard && navigator.clipboard.writeText) {
          navigator.clipboard.writeText(field.value).then(done, noop);
        } else {
          document.execCommand("copy");
          done();
        }
      });
    }
  }

  R.startConsultation = startConsultation;

  // ---------------------------------------------------------------------------------------
  // Start: every part is loaded; the room gets going in the order it always did
  // ---------------------------------------------------------------------------------------

  window.oblakoRoom = room;
  R.startChat();
  bindButtons();
  bindInvites();
  R.startPrecall();
  R.connect();
})(window.oblakoRoomParts);
