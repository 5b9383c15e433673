(function () {
  var root = document.getElementById(AA_ROOT_ID);
  var table = root.querySelector("table.findings");
  var count = root.querySelector(".shown");
  var search = root.querySelector("input[name=q]");
  var code = root.querySelector("select[name=code]");
  var boxes = root.querySelectorAll("input[name=severity]");
  function rows() { return table ? Array.prototype.slice.call(table.tBodies[0].rows) : []; }
  function apply() {
    var needle = search.value.trim().toLowerCase(), wanted = {}, shown = 0;
    boxes.forEach(function (box) { wanted[box.value] = box.checked; });
    rows().forEach(function (row) {
      var ok = wanted[row.dataset.severity] !== false && (!code.value || row.dataset.code === code.value) &&
               (!needle || row.textContent.toLowerCase().indexOf(needle) >= 0);
      row.hidden = !ok;
      if (ok) shown += 1;
    });
    count.textContent = shown.toLocaleString("en") + " of " + rows().length.toLocaleString("en");
  }
  function sortBy(th) {
    var index = Array.prototype.indexOf.call(th.parentNode.children, th);
    var down = th.getAttribute("aria-sort") === "ascending";
    th.parentNode.querySelectorAll("th").forEach(function (other) { other.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", down ? "descending" : "ascending");
    var numeric = th.dataset.type === "number";
    var sorted = rows().sort(function (a, b) {
      var x = a.cells[index].dataset.key || a.cells[index].textContent;
      var y = b.cells[index].dataset.key || b.cells[index].textContent;
      var order = numeric ? (Number(x || Infinity) - Number(y || Infinity)) : x.localeCompare(y);
      return down ? -order : order;
    });
    sorted.forEach(function (row) { table.tBodies[0].appendChild(row); });
  }
  function fromHash() {
    var hash = decodeURIComponent(location.hash.slice(1));
    if (hash.indexOf("filter:") === 0) {
      var params = new URLSearchParams(hash.slice(7));
      code.value = params.get("code") || "";
      search.value = params.get("q") || "";
      var severities = params.get("severity");
      boxes.forEach(function (box) { box.checked = !severities || severities.split(",").indexOf(box.value) >= 0; });
      apply();
      if (table) table.scrollIntoView();
      return;
    }
    var target = hash && document.getElementById(hash);
    for (var node = target; node && node !== root; node = node.parentNode) {
      if (node.tagName === "DETAILS") node.open = true;
    }
    if (target) target.scrollIntoView();
  }
  if (table) {
    table.querySelectorAll("th button").forEach(function (button) {
      button.addEventListener("click", function () { sortBy(button.parentNode); });
    });
    [search, code].forEach(function (control) { control.addEventListener("input", apply); });
    boxes.forEach(function (box) { box.addEventListener("change", apply); });
    root.querySelector(".filters").hidden = false;
  }
  window.addEventListener("hashchange", fromHash);
  if (table) apply();
  fromHash();
  root.dataset.ready = "1";
})();
