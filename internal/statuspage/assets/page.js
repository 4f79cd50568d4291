// Optional: filters the certificates by name or state as you type. The
// page shows everything without it.
(function () {
  var box = document.getElementById("filter");
  if (!box) return;
  box.parentNode.hidden = false;
  var rows = document.querySelectorAll("tr.c");
  box.addEventListener("input", function () {
    var q = box.value.trim().toLowerCase();
    rows.forEach(function (r) {
      var hide = q !== "" && r.textContent.toLowerCase().indexOf(q) < 0;
      r.hidden = hide;
      var why = r.nextElementSibling;
      if (why && why.classList.contains("why")) why.hidden = hide;
    });
  });
})();
