// Small progressive enhancements; every page works without them.
(function () {
  "use strict";

  // The tenant switcher submits as soon as a tenant is picked (a button is shown without JS).
  document.querySelectorAll("form[data-autosubmit] select").forEach(function (select) {
    select.addEventListener("change", function () {
      select.form.submit();
    });
  });

  // Close the user menu when clicking elsewhere or pressing Escape.
  var menus = document.querySelectorAll("details.usermenu");
  document.addEventListener("click", function (event) {
    menus.forEach(function (menu) {
      if (menu.open && !menu.contains(event.target)) menu.open = false;
    });
  });
  document.addEventListener("keydown", function (event) {
    if (event.key !== "Escape") return;
    menus.forEach(function (menu) {
      menu.open = false;
    });
  });
})();

// Copy buttons: <button data-copy="element-id"> copies that element's text (the API key secret shown once).
(function () {
  "use strict";
  document.querySelectorAll("button[data-copy]").forEach(function (button) {
    button.hidden = false;
    button.addEventListener("click", function () {
      var source = document.getElementById(button.getAttribute("data-copy"));
      if (!source || !navigator.clipboard) return;
      navigator.clipboard.writeText(source.textContent.trim()).then(function () {
        button.textContent = "Copied";
      });
    });
  });
})();
