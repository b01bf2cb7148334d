/*
 * Oblako consultation room, browser to browser (1:1): the doctor offers to each admitted
 * participant, a fresh `pc` id per negotiation; signalling, ICE restarts, and the move to the
 * relay when browser-to-browser does not connect.
 * Part of the room: core.js says how the parts fit together.
 */
(function (R) {
  "use strict";

  if (!R) {
    return; // no room on this page (core.js found no config or no socket.io)
  }
  var T = R.T;
  var room = R.room;
  var $ = R.$;
  var show = R.show;
  var noop = R.noop;
  var ICE_GRACE_MS = 5000;
  // Browser-to-browser gets this long to connect, and this many negotiations in a row; then
  // the call goes through the media server's relay (no TURN, UDP blocked, symmetric NATs).
  var P2P_CONNECT_MS = 12000;
  var P2P_TRIES = 2;

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
      R.trace("ice", pcId, pc.iceConnectionState);
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
      R.status(T.in_call, "success");
      setTimeout(function () {
        var el = $("room-status");
        if (el && el.textContent === T.in_call) {
          R.status("");
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
    R.trace("close", peer.id);
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
    var pcId = R.randomId();
    R.trace("call", remoteSid, pcId);
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
        R.trace("not connected in time", pcId, now);
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
    if (R.relayMode()) {
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
        R.trace("take over", peer.id, keys[i], "->", p.sid);
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
      R.trace("doctor now", doctor.sid);
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
        R.status(R.presenceText(who, false), "warning");
      } else if (!room.mediaLost) {
        R.status(T.reconnecting, "warning");
      }
    } else if (room.mediaLost) {
      var back = R.presenceText(room.mediaLost, true);
      room.mediaLost = null;
      R.status(back, "success");
      R.clearLater(back);
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
    R.trace("p2p failed", peer.id, n);
    if (n < P2P_TRIES) {
      renegotiate(peer);
      return;
    }
    room.relayFallback = true;
    signal({ to: peer.remote, kind: "relay", pc: peer.id });
    R.syncRelay(); // says bye to the direct connection, publishes and subscribes
  }

  function askRestart(peer) {
    peer.timer = null;
    var now = peer.pc.iceConnectionState;
    if (room.peers.doctor !== peer || (now !== "disconnected" && now !== "failed")) {
      return;
    }
    R.trace("ask restart", peer.id, now);
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
    R.trace("restart offer", data.pc);
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
    R.trace("ice restart", peer.id);
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
      R.trace("signal", data.kind, data.pc);
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
        R.syncRelay();
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

  R.attachRemote = attachRemote;
  R.closeAllPeers = closeAllPeers;
  R.closePeer = closePeer;
  R.followDoctor = followDoctor;
  R.onSignal = onSignal;
  R.reconcilePeers = reconcilePeers;
  R.rtcConfig = rtcConfig;
  R.signal = signal;
  R.updatePlaceholder = updatePlaceholder;
})(window.oblakoRoomParts);
