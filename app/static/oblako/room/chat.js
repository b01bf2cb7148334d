/*
 * Oblako consultation room, the chat: messages rendered with textContent only, sends that wait
 * for the server's ack (pending, failed, held while the chat is closed, sent again), read marks.
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
  var ACK_TIMEOUT_MS = R.ACK_TIMEOUT_MS;
  var CLOSED_RETRY_MS = 20000; // a message kept while the chat is closed is tried again this often
  // One read mark per this delay at most, for the newest message: every event counts toward
  // the server's flood limit (50 in 5 s), and a busy chat must never get the reader cut off.
  var READ_DELAY_MS = 500;

  var list = null;
  var form = null;
  var input = null;
  var chatError = null;
  var timeFormat = null;

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
      R.emit("chat.read", { up_to: upTo }).then(function (ack) {
        if (ack.ok) {
          room.readMarked = ack.up_to; // what the server stored (tests wait for it)
        } else if (room.lastMarked === upTo) {
          room.lastMarked = before; // the next message (or showing the tab) tries again
        }
      });
    }
  }

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
    R.emit("chat.send", { client_msg_id: clientId, body: p.body }).then(function (ack) {
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

  // The page's elements and the clock format, the messages already rendered, the timers
  // and the form: set up when the room starts (controls.js).
  function startChat() {
    list = $("chat-messages");
    form = $("chat-form");
    input = $("chat-input");
    chatError = $("chat-error");
    timeFormat = null;
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
    document.addEventListener("visibilitychange", flushRead);
    // Sends that got no answer are tried again; held ones (the chat was closed) now and then.
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
        var clientId = R.randomId();
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
  }

  R.addMessage = addMessage;
  R.markRead = markRead;
  R.onChatState = onChatState;
  R.resendPending = resendPending;
  R.startChat = startChat;
})(window.oblakoRoomParts);
