// handwatch review page: keyboard shortcuts and zoom. No build step, no dependencies, no inline script (strict CSP).
(function () {
  "use strict";
  const page = document.body.dataset.page;
  const typing = (el) => el && (el.tagName === "TEXTAREA" || el.tagName === "INPUT" || el.tagName === "SELECT");
  const go = (id) => { const a = document.getElementById(id); if (a) window.location.href = a.href; };

  // The list: j/k move the current row, Enter (or o) opens it.
  let rows = [], current = -1;
  function select(i) {
    if (!rows.length) return;
    current = Math.max(0, Math.min(rows.length - 1, i));
    rows.forEach((r, n) => r.classList.toggle("current", n === current));
    rows[current].scrollIntoView({ block: "nearest" });
  }
  if (page === "list") {
    rows = Array.from(document.querySelectorAll("#items tr.item"));
    if (rows.length) select(0);
  }

  // A file: click a page to zoom in where you clicked; click again to zoom out.
  document.querySelectorAll(".page img").forEach((img) => {
    img.addEventListener("click", (ev) => {
      const fig = img.parentElement;
      const fx = ev.offsetX / img.clientWidth, fy = ev.offsetY / img.clientHeight;
      const zoomed = fig.classList.toggle("zoomed");
      if (zoomed) {
        fig.scrollLeft = fx * img.clientWidth - fig.clientWidth / 2;
        const box = fig.closest(".original");
        if (box) box.scrollTop = fig.offsetTop + fy * img.clientHeight - box.clientHeight / 2;
      }
    });
  });

  document.addEventListener("keydown", (ev) => {
    const el = document.activeElement;
    if (typing(el)) {
      if (el.id === "body" && (ev.ctrlKey || ev.metaKey) && ev.key === "s") { ev.preventDefault(); document.getElementById("save").click(); }
      else if (el.id === "body" && (ev.ctrlKey || ev.metaKey) && ev.key === "Enter") { ev.preventDefault(); document.getElementById("accept").click(); }
      else if (ev.key === "Escape") el.blur();
      return;
    }
    if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
    if (ev.key === "/") { ev.preventDefault(); document.getElementById("q").focus(); return; }
    if (page === "list") {
      if (ev.key === "j") select(current + 1);
      else if (ev.key === "k") select(current - 1);
      else if ((ev.key === "Enter" || ev.key === "o") && current >= 0) rows[current].querySelector("a").click();
    } else if (page === "file") {
      if (ev.key === "j") go("next");
      else if (ev.key === "k") go("prev");
      else if (ev.key === "a") { const b = document.getElementById("accept"); if (b) b.click(); }
      else if (ev.key === "e") { ev.preventDefault(); const t = document.getElementById("body"); if (t) t.focus(); }
      else if (ev.key === "u") window.location.href = "/";
    }
  });
})();
