// sipbridge dashboard: the Live calls table kept current from server-sent events.
// Rows are matched by their call id, so a row keeps its place (and the keyboard focus on
// its Hang up button) while its figures change; new calls are added, ended ones removed.
(function () {
  "use strict";
  var source = null;

  function reconcile(tbody, html) {
    var template = document.createElement("template");
    template.innerHTML = html;
    var incoming = Array.prototype.slice.call(template.content.querySelectorAll("tr"));
    var current = {};
    Array.prototype.forEach.call(tbody.querySelectorAll("tr"), function (row) {
      current[row.getAttribute("data-call") || ""] = row;
    });
    var seen = {};
    incoming.forEach(function (row) {
      var id = row.getAttribute("data-call") || "";
      seen[id] = true;
      var old = current[id];
      if (old && id) {
        var oldCells = old.children, newCells = row.children;
        for (var i = 0; i < newCells.length && i < oldCells.length; i++) {
          if (newCells[i].querySelector("form")) {  // keep a form (and its focus) as it is
            if (!oldCells[i].querySelector("form")) {
              oldCells[i].innerHTML = newCells[i].innerHTML;
              if (window.htmx) { window.htmx.process(oldCells[i]); }
            }
          } else if (oldCells[i].querySelector("form")) {
            oldCells[i].innerHTML = "";  // the call is no longer answered: no hang-up
          } else if (oldCells[i].textContent !== newCells[i].textContent) {
            oldCells[i].textContent = newCells[i].textContent;
          }
        }
        tbody.appendChild(old);
      } else {
        if (old) { old.remove(); }
        tbody.appendChild(row);
        if (window.htmx) { window.htmx.process(row); }
      }
    });
    Object.keys(current).forEach(function (id) {
      if (!seen[id] && current[id].parentNode === tbody) { current[id].remove(); }
    });
  }

  function connect() {
    var table = document.getElementById("live-table");
    if (source) { source.close(); source = null; }
    if (!table || !window.EventSource) { return; }
    var url = table.getAttribute("data-live-source");
    if (!url) { return; }
    source = new EventSource(url);
    source.addEventListener("calls", function (event) {
      var tbody = document.getElementById("live-rows");
      if (tbody) { reconcile(tbody, event.data); } else if (source) { source.close(); source = null; }
    });
  }

  // A form sent back with errors: the keyboard goes to the first field to fix.
  function focusFirstError() {
    var invalid = document.querySelector("[aria-invalid=true]");
    if (invalid) { invalid.focus(); }
  }

  document.addEventListener("DOMContentLoaded", function () { connect(); focusFirstError(); });
  // hx-boost swaps the body without a page load: connect (or stop) after each swap.
  document.addEventListener("htmx:afterSettle", function (event) {
    if (event.target === document.body || (event.target && event.target.id === "main")) {
      connect();
      focusFirstError();
    }
  });
})();
