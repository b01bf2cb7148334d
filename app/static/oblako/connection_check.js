/*
 * «Проверка связи»: gather ICE candidates through the configured servers (a data channel is
 * enough to make the browser gather) and say whether relay candidates appear. Texts come
 * translated from the page (#oblako-check-config); everything is rendered with textContent.
 * window.oblakoCheck exposes the outcome (the browser test reads it).
 */
(function () {
  "use strict";

  var cfgEl = document.getElementById("oblako-check-config");
  if (!cfgEl) {
    return;
  }
  var cfg = JSON.parse(cfgEl.textContent);
  var T = cfg.text || {};
  var GATHER_MS = 10000;
  var verdict = document.getElementById("oblako-check-verdict");
  var body = document.querySelector("#oblako-check-candidates tbody");
  var button = document.getElementById("oblako-check-run");
  var state = (window.oblakoCheck = { done: false, relay: false, types: {} });

  function say(text, kind) {
    verdict.className = "alert alert-" + kind;
    verdict.textContent = text;
  }

  function row(c) {
    var tr = document.createElement("tr");
    [T[c.type] || c.type, c.protocol || "", (c.address || "?") + ":" + (c.port || "")].forEach(
      function (text) {
        var td = document.createElement("td");
        td.textContent = text;
        tr.appendChild(td);
      }
    );
    body.appendChild(tr);
  }

  function finish(pc) {
    if (state.done) {
      return;
    }
    state.done = true;
    pc.close();
    button.disabled = false;
    if (state.relay) {
      say(T.relay_ok, "success");
    } else {
      say(cfg.turn ? T.no_relay : T.no_turn, cfg.turn ? "danger" : "warning");
    }
  }

  function run() {
    state.done = false;
    state.relay = false;
    state.types = {};
    body.textContent = "";
    button.disabled = true;
    say(T.running, "info");
    var pc;
    try {
      pc = new RTCPeerConnection({ iceServers: cfg.ice_servers || [] });
    } catch (err) {
      state.done = true;
      button.disabled = false;
      say((T.failed || "").replace("%(error)s", String(err)), "danger");
      return;
    }
    pc.createDataChannel("check");
    pc.onicecandidate = function (event) {
      var c = event.candidate;
      if (!c) {
        finish(pc);
        return;
      }
      if (!c.candidate) {
        return;
      }
      state.types[c.type] = (state.types[c.type] || 0) + 1;
      if (c.type === "relay") {
        state.relay = true;
      }
      row(c);
    };
    pc.createOffer()
      .then(function (offer) {
        return pc.setLocalDescription(offer);
      })
      .catch(function (err) {
        say((T.failed || "").replace("%(error)s", String(err)), "danger");
      });
    window.setTimeout(function () {
      finish(pc);
    }, GATHER_MS);
  }

  button.addEventListener("click", run);
  run();
})();
