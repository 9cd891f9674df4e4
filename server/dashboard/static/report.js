// onetap monthly report: the print button (inline handlers are barred by the CSP).
(function () {
  "use strict";
  var button = document.getElementById("print");
  if (button) {
    button.addEventListener("click", function (event) { event.preventDefault(); window.print(); });
  }
})();
