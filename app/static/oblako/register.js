/* The registration form (oblako/register.html, first display only): preselect the browser's own
 * time zone when it is one of ours, since most people do not know its name. */
(function () {
  "use strict";
  var zone = (window.Intl && Intl.DateTimeFormat().resolvedOptions().timeZone) || "";
  var select = document.getElementById("timezone");
  if (!select) { return; }
  for (var i = 0; i < select.options.length; i++) {
    if (select.options[i].value === zone) { select.value = zone; return; }
  }
})();
