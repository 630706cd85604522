from rest_framework.views import APIView


class TokenCountApi(APIView):
    pass
