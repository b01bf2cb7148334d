/* A referral import's page (oblako/referral_show.html): while the import runs, poll its
 * progress and reload the page when it is done. */
(function () {
  "use strict";
  var box = document.getElementById("import-progress");
  if (!box || box.getAttribute("data-running") !== "1") { return; }
  var bar = box.querySelector(".progress-bar"), text = document.getElementById("import-progress-text");
  function poll() {
    fetch(box.getAttribute("data-url"), {credentials: "same-origin", headers: {"Accept": "application/json"}})
      .then(function (r) { return r.json(); })
      .then(function (p) {
        bar.style.width = p.percent + "%";
        bar.setAttribute("aria-valuenow", p.percent);
        text.textContent = p.imported_rows + " / " + p.valid_rows;
        if (p.done) { window.location.reload(); } else { setTimeout(poll, 2000); }
      })
      .catch(function () { setTimeout(poll, 5000); });
  }
  setTimeout(poll, 1000);
})();
