/* What every page needs beyond jQuery and Bootstrap, loaded only where it is used.
 *
 * Flask-AppBuilder's form and list widgets (select2, the date picker, the search filters, the
 * actions on checked rows, the delete confirmation) weigh more than the rest of a page; the
 * patient's pages have none of them. When the page has one, their style sheets and scripts
 * (listed, content-hashed, on this script's data-css / data-js by oblako/baselayout.html) are
 * added in order: FAB's filters and actions, the date picker, select2, oblako/fab.js, FAB's ab.js.
 *
 * It also registers the service worker (oblako/sw.js: the offline page, never patient data).
 */
(function () {
  "use strict";
  var me = document.getElementById("oblako-widgets");
  if (!me) { return; }

  var WIDGETS = [
    ".my_select2", ".my_select2_ajax", ".my_select2_ajax_slave", ".appbuilder_date",
    ".appbuilder_datetime", "[data-provide=datepicker]", "#filter_form", "#fab-search-filters",
    "[data-fab-model-actions]", "[data-fab-delete]", "[data-fab-single-action]",
    "[data-fab-multiple-action]", ".confirm", "a[data-toggle=tab]"
  ].join(",");

  function words(name) {
    return (me.getAttribute(name) || "").split(/\s+/).filter(Boolean);
  }

  if (document.querySelector(WIDGETS)) {
    words("data-css").forEach(function (href) {
      var link = document.createElement("link");
      link.rel = "stylesheet";
      link.href = href;
      document.head.appendChild(link);
    });
    words("data-js").forEach(function (src) {
      var script = document.createElement("script");
      script.src = src;
      script.async = false; // run in the listed order, like the tags they replace
      document.body.appendChild(script);
    });
  }

  var worker = me.getAttribute("data-worker");
  if (worker && "serviceWorker" in navigator) {
    window.addEventListener("load", function () {
      navigator.serviceWorker.register(worker, { scope: "/" }).catch(function () {});
    });
  }
}());
