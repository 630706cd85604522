from rest_framework.views import APIView


class UsageCollectionApi(APIView):
    pass


class UsageDetailApi(APIView):
    pass
