/*
 * Oblako consultation room, the pre-call check and the self-view: the permission prompt, the
 * self-preview, the microphone level, dragging the self-view inside the video.
 * Part of the room: core.js says how the parts fit together.
 */
(function (R) {
  "use strict";

  if (!R) {
    return; // no room on this page (core.js found no config or no socket.io)
  }
  var T = R.T;
  var ROOM = R.ROOM;
  var room = R.room;
  var $ = R.$;
  var show = R.show;
  var noop = R.noop;

  var precall = null;

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

  // The self-view can be dragged; the room's page checks the camera and microphone at once,
  // the chat panel has no pre-call check.
  function startPrecall() {
    precall = $("precall");
    draggable($("room-self"), $("room-videos"));
    if (ROOM && $("local-video")) {
      startPreview();
    } else {
      show(precall, false);
    }
  }

  R.startPrecall = startPrecall;
})(window.oblakoRoomParts);
