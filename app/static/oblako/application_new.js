/* The application form (oblako/application_new.html): show only the chosen disease's list of
 * required documents. */
(function () {
  "use strict";
  var select = document.getElementById("disease");
  if (!select) { return; }
  function show() {
    document.querySelectorAll(".disease-checklist").forEach(function (el) {
      el.hidden = el.getAttribute("data-disease") !== select.value;
    });
  }
  select.addEventListener("change", show);
  show();
})();
