/* Flask-AppBuilder's list, search and action widgets without inline script.
 *
 * FAB 5.3.0 wires these with small inline scripts; our overrides of its templates
 * (app/templates/appbuilder/general/lib.html, widgets/base_list.html, widgets/search.html) carry
 * the same values in data- attributes and a JSON data block, and this file does what those
 * scripts did, with FAB's own AdminActions / AdminFilters (ab_actions.js, ab_filters.js).
 * Loaded after FAB's scripts by oblako/baselayout.html.
 */
(function ($) {
  "use strict";
  if (!$ || typeof AdminActions === "undefined") { return; }

  // FAB put the confirmation text into a JavaScript string inside HTML, where it stayed
  // entity-escaped, and AdminActions shows it with .html(): escape it the same way.
  function confirmation(el) {
    var text = el.getAttribute("data-fab-confirmation") || "";
    return text ? $("<div>").text(text).html() : false;
  }

  // The search widget: what search.html passed to AdminFilters inline. Run now, as the inline
  // script did (before ab.js's ready handler turns the filters' selects into select2).
  var data = document.getElementById("fab-search-filters");
  if (data && typeof AdminFilters !== "undefined") {
    var f = JSON.parse(data.textContent);
    new AdminFilters("#filter_form", f.labels, f.form, f.filters, f.active);
  }

  $(function () {
    // base_list.html: one AdminActions for the list's checkboxes and its action menu.
    if (document.querySelector("[data-fab-model-actions]")) {
      window.modelActions = new AdminActions();
    }
  });

  // lib.html render_actions: an action on the checked rows of the list.
  $(document).on("click", "[data-fab-multiple-action]", function (e) {
    e.preventDefault();
    window.modelActions.execute_multiple(this.getAttribute("data-fab-multiple-action"), confirmation(this));
  });

  // lib.html render_action_links: an action on the record shown.
  $(document).on("click", "[data-fab-single-action]", function (e) {
    e.preventDefault();
    new AdminActions().execute_single(this.getAttribute("data-fab-single-action"), confirmation(this));
  });

  // lib.html lnk_delete: the delete button of a row or a record (its modal shows plain text).
  $(document).on("click", "[data-fab-delete]", function (e) {
    e.preventDefault();
    new AdminActions().execute_single_delete(
      this.getAttribute("data-fab-delete"), this.getAttribute("data-fab-confirmation") || "");
  });
})(window.jQuery);
