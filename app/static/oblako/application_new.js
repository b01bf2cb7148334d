/* The application form (oblako/application_new.html) leads instead of refusing:
 * - only the chosen disease's required documents are listed, each with its own
 *   «Добавить файлы» (several at once) and «Сфотографировать» (the phone's camera);
 * - each line says whether the document is there (a ticked one of «Мои документы» or a file
 *   chosen on the line), and the summary says what is still missing, as she goes;
 * - sending with something missing, a file too large or of a kind not accepted is stopped
 *   here with the reason, nothing she typed or chose is lost. The server checks it all again.
 */
(function () {
  "use strict";
  var form = document.getElementById("application-form");
  var select = document.getElementById("disease");
  var textsEl = document.getElementById("application-texts");
  if (!form || !select || !textsEl) { return; }
  var T = JSON.parse(textsEl.textContent);
  var checklist = document.getElementById("checklist");
  var summary = document.getElementById("missing-summary");
  var problem = document.getElementById("form-problem");
  var maxBytes = Number(form.getAttribute("data-max-bytes")) || 0;
  var maxTotal = Number(form.getAttribute("data-max-total")) || 0;
  var accepted = (form.getAttribute("data-accept") || "").split(",").filter(function (a) {
    return a.charAt(0) === ".";
  });

  function fill(text, values) {
    return text.replace(/%\((\w+)\)s/g, function (m, key) {
      return Object.prototype.hasOwnProperty.call(values, key) ? values[key] : m;
    });
  }
  function each(selector, root, fn) {
    Array.prototype.forEach.call((root || form).querySelectorAll(selector), fn);
  }
  function lines() {
    return Array.prototype.slice.call(form.querySelectorAll(".checklist-item"));
  }
  function requiredNow(line) {
    var ids = " " + (line.getAttribute("data-diseases") || "") + " ";
    return select.value !== "" && ids.indexOf(" " + select.value + " ") >= 0;
  }
  function tickedOfType(typeId) {
    return form.querySelectorAll('input[name="documents"][data-type="' + typeId + '"]:checked');
  }
  function chosenFiles(line) {
    var names = [];
    each('input[type="file"]', line, function (input) {
      Array.prototype.forEach.call(input.files || [], function (f) { names.push(f.name); });
    });
    return names;
  }

  // On choosing a disease, tick the newest document of each type it requires that has none
  // ticked yet (the list is newest first): most patients have just uploaded them.
  function tickNewest() {
    lines().forEach(function (line) {
      var typeId = line.getAttribute("data-type");
      if (!requiredNow(line) || tickedOfType(typeId).length) { return; }
      var first = form.querySelector('input[name="documents"][data-type="' + typeId + '"]');
      if (first) { first.checked = true; }
    });
  }

  function refresh() {
    var missing = [];
    var shown = 0;
    lines().forEach(function (line) {
      var on = requiredNow(line);
      line.hidden = !on;
      // A hidden line's files must not be sent (chosen for another disease, then changed).
      each('input[type="file"]', line, function (input) { input.disabled = !on; });
      if (!on) { return; }
      shown += 1;
      var files = chosenFiles(line);
      var ticked = tickedOfType(line.getAttribute("data-type"));
      var ok = files.length > 0 || ticked.length > 0;
      line.classList.toggle("checklist-ok", ok);
      line.classList.toggle("checklist-missing", !ok);
      line.querySelector(".checklist-icon").textContent = ok ? "✓" : "!";
      line.querySelector(".checklist-state").textContent = ok ? T.attached : T.missing;
      var names = Array.prototype.map.call(ticked, function (box) {
        return box.getAttribute("data-name");
      }).concat(files);
      line.querySelector(".checklist-chosen").textContent =
        names.length ? fill(T.chosen, { names: names.join(", ") }) : "";
      if (!ok) { missing.push(line.getAttribute("data-label")); }
    });
    if (checklist) { checklist.hidden = shown === 0; }
    if (summary) {
      summary.hidden = shown === 0;
      summary.className = "alert " + (missing.length ? "alert-warning" : "alert-success");
      summary.textContent = missing.length
        ? fill(T.still_missing, { names: missing.join(", ") })
        : T.all_there;
    }
    return missing;
  }

  function fileProblem() {
    var total = 0;
    var found = null;
    each('input[type="file"]', form, function (input) {
      if (input.disabled || found) { return; }
      Array.prototype.forEach.call(input.files || [], function (f) {
        if (found) { return; }
        total += f.size;
        var dot = f.name.lastIndexOf(".");
        var ext = dot > 0 ? f.name.slice(dot).toLowerCase() : "";
        if (ext && accepted.length && accepted.indexOf(ext) < 0) {
          found = { text: fill(T.bad_type, { name: f.name }), input: input };
        } else if (maxBytes && f.size > maxBytes) {
          found = { text: fill(T.too_big, { name: f.name }), input: input };
        }
      });
    });
    if (!found && maxTotal && total > maxTotal) { found = { text: T.too_much, input: null }; }
    return found;
  }

  function stop(event, text, focus) {
    event.preventDefault();
    problem.textContent = text;
    problem.hidden = false;
    if (focus) {
      focus.focus();
      if (focus.scrollIntoView) { focus.scrollIntoView({ block: "center" }); }
    } else {
      problem.scrollIntoView({ block: "center" });
    }
  }

  select.addEventListener("change", function () { tickNewest(); refresh(); });
  form.addEventListener("change", function () { problem.hidden = true; refresh(); });
  form.addEventListener("submit", function (event) {
    var missing = refresh();
    if (missing.length) {
      var first = lines().filter(function (l) {
        return !l.hidden && l.classList.contains("checklist-missing");
      })[0];
      stop(event, fill(T.send_missing, { names: missing.join(", ") }),
        first && first.querySelector('input[type="file"]'));
      return;
    }
    var bad = fileProblem();
    if (bad) { stop(event, bad.text, bad.input); }
  });
  refresh();
})();
