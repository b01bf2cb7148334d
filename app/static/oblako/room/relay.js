/*
 * Oblako consultation room, the media server's relay: publish while recording or with 3+
 * participants, subscribe with 3+ (or once browser-to-browser failed); the recording state.
 * Part of the room: core.js says how the parts fit together.
 */
(function (R) {
  "use strict";

  if (!R) {
    return; // no room on this page (core.js found no config or no socket.io)
  }
  var T = R.T;
  var E = R.E;
  var ROOM = R.ROOM;
  var room = R.room;
  var $ = R.$;
  var show = R.show;

  // People admitted, not sockets: after a media process dies, its sockets stay listed until
  // its heartbeat expires while their owners are back through another process. Counting those
  // twice would move a call that still flows browser-to-browser onto the relay.
  function admittedCount() {
    var people = {};
    room.participants.forEach(function (p) {
      if (p.state === "admitted") {
        people[R.identity(p)] = true;
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
        return R.emit(event, payload);
      })
      .then(function (ack) {
        if (!ack.ok || typeof ack.sdp !== "string") {
          throw new R.RoomError(E[ack.error] || E.unknown);
        }
        return pc.setRemoteDescription({ type: "answer", sdp: ack.sdp });
      });
  }

  function publish() {
    var stream = room.localStream;
    if (!stream || !stream.getTracks().length) {
      return; // nothing to send: the others still hear and see each other
    }
    var pc = new RTCPeerConnection(R.rtcConfig());
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
        R.status(err.message || E.unknown, "warning");
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
    var pc = new RTCPeerConnection(R.rtcConfig());
    var sub = { pc: pc, remote: source, video: null, id: "relay:" + source };
    room.relay.subs[source] = sub;
    pc.addTransceiver("audio", { direction: "recvonly" });
    pc.addTransceiver("video", { direction: "recvonly" });
    pc.ontrack = function (event) {
      R.attachRemote(sub, event);
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
    R.updatePlaceholder();
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
      R.emit("relay.unpublish", {});
      room.relay.pub.close();
      room.relay.pub = null;
    }
    if (many && Object.keys(room.peers).length) {
      // Browser-to-browser connections give way to the relay (the doctor's side sends bye).
      Object.keys(room.peers).forEach(function (key) {
        var peer = room.peers[key];
        if (room.role === "doctor") {
          R.signal({ to: peer.remote, kind: "bye", pc: peer.id });
        }
        R.closePeer(key);
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
        R.status("");
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

  R.closeRelay = closeRelay;
  R.relayMode = relayMode;
  R.setRecording = setRecording;
  R.syncRelay = syncRelay;
})(window.oblakoRoomParts);
