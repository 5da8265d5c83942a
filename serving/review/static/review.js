// The review page's few enhancements (it works without them): select every row of the
// page, count the selection, and ask before deciding every suggestion matching the filters.
document.addEventListener("DOMContentLoaded", () => {
  const bulk = document.getElementById("bulk");
  if (!bulk) return;
  const boxes = () => [...document.querySelectorAll('input[name="ids"][form="bulk"]')];
  const all = document.getElementById("select-all");
  const count = document.getElementById("selected-count");
  const option = document.getElementById("scope-selected");
  const scope = bulk.querySelector('select[name="scope"]');
  const update = () => {
    const chosen = boxes().filter((box) => box.checked).length;
    count.textContent = chosen ? `${chosen} selected` : "none selected";
    option.textContent = `Selected (${chosen})`;
    if (all) all.checked = chosen > 0 && chosen === boxes().length;
  };
  if (all) all.addEventListener("change", () => {
    boxes().forEach((box) => { box.checked = all.checked; });
    update();
  });
  boxes().forEach((box) => box.addEventListener("change", () => {
    if (box.checked) scope.value = "selected";
    update();
  }));
  bulk.addEventListener("submit", (event) => {
    const action = event.submitter ? event.submitter.value : "decide";
    if (scope.value === "matching" &&
        !window.confirm(`${action === "reject" ? "Reject" : "Approve"} every suggestion matching the filters?`)) {
      event.preventDefault();
    }
  });
  update();
});
